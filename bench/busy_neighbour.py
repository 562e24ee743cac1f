"""Query embedding latency with the machine to itself and with a busy neighbour, by torch thread count.

    .venv/bin/python bench/busy_neighbour.py [--threads 2 1] [--repeat 4]

The neighbour is a second Python process spinning on one core, as a blog's own site build would be.
OpenMP threads wait on a partner the scheduler has put aside, so more threads can be much slower then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(threads: int, questions: list[str]) -> dict:
    import torch

    from rag import parts
    from rag.settings import Settings

    embedder = parts.embedder(Settings(torch_threads=threads))
    for question in questions[:10]:  # warm up
        embedder.encode_queries([question])
    ms = []
    for question in questions:
        started = time.perf_counter()
        embedder.encode_queries([question])
        ms.append((time.perf_counter() - started) * 1000)
    ms.sort()
    return {"threads": torch.get_num_threads(), "n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[int(len(ms) * 0.95)], 1), "max_ms": round(ms[-1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeat", type=int, default=4, help="passes over the allforces dev questions")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one thread count
    args = parser.parse_args()
    shared = Path(os.environ.get("RAG_SHARED", ROOT.parent / "shared"))
    questions = [json.loads(line)["question"] for line in (shared / "eval/allforces/dev.jsonl").open(encoding="utf-8")]
    if args.one:
        print(json.dumps(measure(args.one, questions * args.repeat)))
        return
    rows = []
    for neighbour in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
        try:
            for threads in args.threads:  # a fresh process each: torch's thread pool is process-wide
                out = subprocess.run([sys.executable, __file__, "--one", str(threads), "--repeat", str(args.repeat)],
                                     capture_output=True, text=True, check=True).stdout
                rows.append({"busy_neighbour": neighbour, **json.loads(out.strip().splitlines()[-1])})
        finally:
            if spinner:
                spinner.kill()
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
