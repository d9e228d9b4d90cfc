"""Fine-tune the sentiment LoRA adapter on all-MiniLM-L6-v2 (design.md §5 recipe), on CPU.

PEFT LoRA r=8, alpha=16 on query+value, plus the classifier head (PEFT SEQ_CLS keeps it trainable
and saves it with the adapter); the pooler comes from the base weights. AdamW lr 2e-3, batch 32,
max_len 64, a fixed number of steps. Writes into OUT:
  adapter_config.json, adapter_model.safetensors  (PEFT's own files)
  config.json                                     (the classifier's config: id2label/label2id)
  metrics.json                                    (PyTorch's test accuracy, evaluated at max_len 256)
Usage: .cache/train-venv/bin/python tools/train/finetune_lora.py BASE_DIR SENTIMENT_DIR OUT [STEPS]
"""
import json
import random
import sys
import time

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoTokenizer, BertForSequenceClassification

LABELS = ["negative", "positive"]
SEED = 20261127


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def accuracy(model, tok, rows, max_len, batch=64):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            enc = tok([r["text"] for r in chunk], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).tolist()
            correct += sum(LABELS[p] == r["label"] for p, r in zip(pred, chunk))
    return correct / len(rows)


def main(base, data, out, steps=180):
    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(2)
    train, test = load(f"{data}/train.jsonl"), load(f"{data}/test.jsonl")
    tok = AutoTokenizer.from_pretrained(base)
    model = BertForSequenceClassification.from_pretrained(
        base,
        num_labels=2,
        id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
    )
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])
    model = get_peft_model(model, cfg)
    model.print_trainable_parameters()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 18) * max(0.0, 1 - s / steps))
    order = []
    t0 = time.time()
    model.train()
    for step in range(steps):
        if len(order) < 32:
            order += random.sample(range(len(train)), len(train))
        idx, order = order[:32], order[32:]
        batch = [train[i] for i in idx]
        enc = tok([r["text"] for r in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        labels = torch.tensor([LABELS.index(r["label"]) for r in batch])
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 20 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    acc = accuracy(model, tok, test, 256)
    print(f"test accuracy (max_len 256): {acc:.4f}", flush=True)
    model.save_pretrained(out)
    model.base_model.model.config.save_pretrained(out)
    # Name the base by its public name, not the local folder it was read from.
    with open(f"{out}/adapter_config.json") as f:
        adapter_config = json.load(f)
    adapter_config["base_model_name_or_path"] = "sentence-transformers/all-MiniLM-L6-v2"
    with open(f"{out}/adapter_config.json", "w") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(f"{out}/metrics.json", "w") as f:
        json.dump(
            {
                "test_accuracy": acc,
                "test_rows": len(test),
                "eval_max_length": 256,
                "steps": steps,
                "batch_size": 32,
                "train_max_length": 64,
                "lr": 2e-3,
                "seed": SEED,
                "train_seconds": round(time.time() - t0),
                "torch": torch.__version__,
            },
            f,
            indent=2,
        )
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 180)
