"""Goldens from Hugging Face transformers (the implementation we check ourselves against).

For every text of GOLDEN_TEXTS: the token ids of the base tokenizer (truncated at 256), the
sentence embedding of the base model (sentence-transformers recipe: mean pooling over the
attention mask, then L2 normalization), and the logits of the fine-tuned classifier (base +
PEFT LoRA adapter, un-merged, eval mode). Texts run one at a time (no padding).
Usage: .cache/train-venv/bin/python tools/train/make_goldens.py BASE_DIR ADAPTER_DIR OUT.json
"""
import json
import sys

import peft
import torch
import transformers
from peft import PeftModel
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertForSequenceClassification

MAX_LENGTH = 256
LONG = " ".join(f"word{i} and the film goes on" for i in range(120))

GOLDEN_TEXTS = [
    "I loved this film",
    "A waste of two hours.",
    "The plot was predictable, but the acting saved it.",
    "Not bad at all!",
    "not good, not terrible",
    "An absolute masterpiece of modern cinema; I cried twice.",
    "Boring. Boring. Boring.",
    "",
    "   ",
    "\t\n",
    "a",
    "?",
    "Ce film était magnifique, je le recommande vivement.",
    "Der Film war leider ziemlich langweilig.",
    "La película fue una pérdida de tiempo.",
    "Il film è stato fantastico!",
    "Фильм был просто ужасен.",
    "この映画は本当に素晴らしかった。",
    "这部电影非常好看，我很喜欢。",
    "영화가 정말 재미있었어요",
    "الفيلم كان رائعا جدا",
    "הסרט היה משעמם",
    "फिल्म बहुत अच्छी थी",
    "Ταινία χωρίς νόημα.",
    "Great movie 😍🍿🎬",
    "🙄🙄🙄 worst sequel ever 👎",
    "10/10 would watch again",
    "Rated 2.5 out of 5 stars, 47% on the meter, $120,000,000 budget.",
    "Released on 2023-07-21 at 19:30 (UTC+2).",
    "See https://example.com/reviews?id=42&lang=en for the full review",
    "Contact me at critic@example.org or @film_critic on social media #cinema",
    "ALL CAPS REVIEW: TERRIBLE!!!",
    "naïve café résumé coöperate façade",
    "Ünïcödé ñörmâlïzätïön tëst",
    "The director's cut (2h 47m) is—honestly—too long…",
    "<p>HTML <b>tags</b> &amp; entities</p>",
    "line one\nline two\r\nline three",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "zero-width\u200bspace and\u00a0non-breaking space",
    "mixed 中文 and English and 日本語 together",
    LONG,
    "This is a really long review. " * 80,
    "Although the first act drags and the dialogue is often clumsy, the final thirty minutes are "
    "so gripping and so beautifully shot that I left the theatre grateful I had stayed.",
]


def main(base, adapter, out):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    encoder = AutoModel.from_pretrained(base).eval()
    config = AutoConfig.from_pretrained(adapter)  # the classifier's config, with id2label
    classifier = BertForSequenceClassification.from_pretrained(base, config=config)
    classifier = PeftModel.from_pretrained(classifier, adapter).eval()
    rows = []
    with torch.no_grad():
        for text in GOLDEN_TEXTS:
            enc = tok(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            embedding = torch.nn.functional.normalize(pooled, p=2, dim=1)[0]
            logits = classifier(**enc).logits[0]
            rows.append(
                {
                    "text": text,
                    "input_ids": enc["input_ids"][0].tolist(),
                    "embedding": [float(x) for x in embedding],
                    "logits": [float(x) for x in logits],
                }
            )
    meta = {
        "made_by": "tools/train/make_goldens.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "peft": peft.__version__,
        "max_length": MAX_LENGTH,
        "labels": [classifier.config.id2label[i] for i in range(classifier.config.num_labels)],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "texts": rows}, f, ensure_ascii=False)
        f.write("\n")
    print(f"{len(rows)} goldens written to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
