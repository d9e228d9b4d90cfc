"""Joint inference on the sentiment test split: accuracy, mean latency and fraction sent to the
cloud of edge-only, cloud-only and joint (edge + cloud) at several thresholds. Stdlib only.

Starts the servers itself, on loopback: a cloud `autoglm serve` with the cloud package, then one
edge `autoglm serve` per row (without --escalate-to for edge-only, with --escalate-to the cloud
and --escalate-below T for each threshold T). Every text is one request (batch 1, one client,
keep-alive), timed by the client; the fraction escalated is what the edge's answers say
(`"source": "cloud"`). Cloud-only is the client asking the cloud server directly.

  python3 tools/bench/joint_bench.py --autoglm BIN --edge models/sentiment-int8.tar \
      --cloud PKG_FP32 [--test .cache/assets/sentiment/test.jsonl] [--thresholds 0.6,0.7,0.8,0.9]
      [--threads 1] [--limit N] [--entropy]

With --entropy the joint rows use --escalate-entropy-above E instead (Sedna's CrossEntropyFilter).
Prints a markdown table.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, package, threads, extra=()):
        self.port = free_port()
        cmd = [binary, "serve", "--model", f"sentiment={package}", "--addr", f"127.0.0.1:{self.port}",
               "--threads", str(threads), "--poll-secs", "0", "--max-batch", "1", "--batch-wait-ms", "0",
               *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "AUTOGLM_LOG": "warn"})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{' '.join(cmd)} exited: {self.proc.stderr.read().decode()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    c.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        sys.exit(f"{' '.join(cmd)} not ready after 120 s")

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run(port, rows):
    """Accuracy, mean and p95 latency (ms), fraction answered by the cloud."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    correct = cloud = 0
    times = []
    for row in rows:
        body = json.dumps({"texts": [row["text"]]})
        t = time.perf_counter()
        conn.request("POST", "/v1/classify", body, {"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        times.append((time.perf_counter() - t) * 1e3)
        if response.status != 200:
            sys.exit(f"status {response.status}: {data[:200]!r}")
        result = json.loads(data)["results"][0]
        correct += result["label"] == row["label"]
        cloud += result.get("source") == "cloud"
    conn.close()
    times.sort()
    n = len(rows)
    return correct / n, sum(times) / n, times[int(0.95 * (n - 1))], cloud / n


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--autoglm", required=True)
    p.add_argument("--edge", required=True)
    p.add_argument("--cloud", required=True)
    p.add_argument("--test", default=".cache/assets/sentiment/test.jsonl")
    p.add_argument("--thresholds", default="0.6,0.7,0.8,0.9")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--entropy", action="store_true")
    args = p.parse_args()
    with open(args.test, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    if args.limit:
        rows = rows[: args.limit]
    table = []
    cloud = Server(args.autoglm, args.cloud, args.threads)
    try:
        # Warm both paths once (page cache, first allocations), then measure.
        run(cloud.port, rows[:20])
        acc, mean, p95, _ = run(cloud.port, rows)
        table.append(("cloud only (fp32)", "-", acc, mean, p95, 1.0))
        edge = Server(args.autoglm, args.edge, args.threads)
        try:
            run(edge.port, rows[:20])
            table.append(("edge only (int8)", "-", *run(edge.port, rows)))
        finally:
            edge.stop()
        flag = "--escalate-entropy-above" if args.entropy else "--escalate-below"
        for t in args.thresholds.split(","):
            edge = Server(args.autoglm, args.edge, args.threads,
                          ["--escalate-to", cloud.url(), flag, t, "--escalate-timeout-ms", "5000"])
            try:
                run(edge.port, rows[:20])
                rule = f"entropy > {t}" if args.entropy else f"top < {t}"
                table.append(("joint", rule, *run(edge.port, rows)))
            finally:
                edge.stop()
    finally:
        cloud.stop()
    print(f"{len(rows)} texts of {args.test}, one per request, {args.threads} thread(s) per server\n")
    print("| setup | hard example | accuracy | mean latency (ms) | p95 (ms) | sent to the cloud |")
    print("|---|---|---|---|---|---|")
    for name, rule, acc, mean, p95, frac in table:
        print(f"| {name} | {rule} | {acc * 100:.2f} % | {mean:.2f} | {p95:.2f} | {frac * 100:.1f} % |")


if __name__ == "__main__":
    main()
