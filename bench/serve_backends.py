"""POST /ask through the real server on an existing index, once per embedding backend: `torch` (what `rag serve`
used before) against the serving default (`auto`, which `rag serve` turns into `onnx` on a CPU).

The dev questions are sent at concurrency 1 and 8 (bench/run.py's load test), with the query log off.
Results: bench/results/<date>-serve-backends.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine, serve_bench  # noqa: E402
from rag.settings import Settings  # noqa: E402


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--backends", default="torch,auto")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    dev = settings.shared / "eval" / "allforces" / "dev.jsonl"
    questions = [json.loads(line)["question"] for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = (questions * (args.requests // len(questions) + 1))[: args.requests]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "index": str(args.index), "runs": {}}
    for backend in args.backends.split(","):
        env = {**os.environ, "RAG_EMBEDDING_BACKEND": backend, "RAG_QUERY_LOG": "off", "PYTHONPATH": str(ROOT)}
        result["runs"][backend] = serve_bench(str(args.index), questions, env, args.requests, args.max_seconds)
        print(backend, json.dumps(result["runs"][backend]), flush=True)
    m = result["machine"]
    lines = [f"# Serving by embedding backend ({result['date']})", "",
             f"`python bench/serve_backends.py --index {args.index}`; {m['cores']} cores, {m['cpu']}, flags: "
             f"{m['cpu_flags']}.", "",
             "| RAG_EMBEDDING_BACKEND | c=1 p50 / p95 / p99 ms | c=1 req/s | c=8 p50 / p95 / p99 ms | c=8 req/s | errors "
             "| RSS after load / after the load test MiB |", "|---|---|---|---|---|---|---|"]
    for backend, run in result["runs"].items():
        one, eight = run["http"]
        lines.append(f"| {backend} | {one['p50']} / {one['p95']} / {one['p99']} | {one['req_per_s']} | {eight['p50']} / "
                     f"{eight['p95']} / {eight['p99']} | {eight['req_per_s']} | {one['errors'] + eight['errors']} | "
                     f"{run['rss_after_load_mib']} / {run['rss_after_load_test_mib']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.now().strftime('%Y-%m-%d')}-serve-backends"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
