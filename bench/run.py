"""`make bench`: index build speed, the serving targets through the real server, and memory.

(a) cold build of N shared articles (BENCH_ARTICLES, default 200) in a subprocess, then an incremental
    rebuild after touching one file; (b) bench/serve_targets.py's measurements on that index: the real server
    under the dev questions at concurrency 1 and 8 (bounded count and duration), its RSS after load and after
    the load test, a soak at c=8 (BENCH_SOAK_SECONDS, default 600), an article changed, added and deleted under
    it, the in-process ask split into embed/search/compose, the question vectors' cosine to fp32; each target
    printed with its figure; (c) the embedding backends this machine runs; (d) bench/first_answer.py on the whole
    shared corpus: `rag serve --build` from no index, the seconds to the first cited answer and to hybrid search
    (BENCH_FIRST_ANSWER_MINUTES, default 45; 0 skips it).
Results go to bench/results/<date>-<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backends import backends_markdown, compare_backends  # noqa: E402
from rag.index.folder import MANIFEST, live_generation  # noqa: E402
from rag.index.manifest import Manifest  # noqa: E402
from rag.settings import Settings  # noqa: E402

RAG = [sys.executable, "-m", "rag.cli"]


SPEED_FLAGS = ("amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")  # what embedding speed hangs on


def machine() -> dict:
    cpu, flags = "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "cpu_flags": " ".join(f for f in SPEED_FLAGS if f in flags) or "none of " + ", ".join(SPEED_FLAGS)}


def build_bench(posts: Path, n: int, work: Path, env: dict) -> dict:
    files = sorted(posts.glob("*.md"))
    step = max(1, len(files) // n)
    chosen = files[::step][:n]
    corpus = work / "corpus"
    corpus.mkdir()
    for f in chosen:
        shutil.copy(f, corpus / f.name)
    index = work / "index"
    cmd = RAG + ["index", "--corpus", str(corpus), "--index", str(index), "--quiet"]
    cold = _timed(cmd, env)
    manifest = Manifest.read(live_generation(index) / MANIFEST)
    touched = corpus / chosen[len(chosen) // 2].name
    touched.write_text(touched.read_text(encoding="utf-8") + "\n\nベンチマークのために追加した段落です。\n", encoding="utf-8")
    incremental = _timed(cmd, env)
    counts = manifest.counts
    return {
        "backend": manifest.model.backend,
        "articles": len(chosen), "chunks": counts.chunks, "distinct_texts": counts.distinct_texts,
        "cold_seconds": round(cold["seconds"], 1), "cold_peak_rss_mib": cold["peak_rss_mib"],
        "chunks_per_second": round(counts.chunks / cold["seconds"], 2),
        "seconds_per_article": round(cold["seconds"] / len(chosen), 3),
        "embed_seconds": manifest.build.embed_seconds,
        "incremental_seconds": round(incremental["seconds"], 1), "incremental_output": incremental["out"].strip(),
        "index": str(index),
    }


def _timed(cmd: list[str], env: dict) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return {"seconds": seconds, "out": out, "peak_rss_mib": _children_peak_rss_mib()}


def _children_peak_rss_mib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # largest child so far


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))], 1)  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99)}


def load_test(url: str, questions: list[str], concurrency: int, max_requests: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    counter = iter(range(max_requests))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=60) as client:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                started = time.perf_counter()
                try:
                    ok = client.post(f"{url}/ask", json={"question": questions[i % len(questions)]}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000)
                    errors += not ok

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors,
            "req_per_s": round(len(latencies) / wall, 2), **percentiles(latencies)}


def wait_ready(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("bench: the server did not become ready in 300 s")


@contextmanager
def running_server(index: str, env: dict) -> Iterator[tuple[str, int]]:
    """`rag serve` on the index, once it is ready: (its URL, its pid)."""
    port = free_port()
    server = subprocess.Popen(RAG + ["serve", "--index", index, "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def serve_bench(index: str, questions: list[str], env: dict, max_requests: int, max_seconds: float) -> dict:
    with running_server(index, env) as (url, pid):
        after_load = rss_mib(pid)
        runs = [load_test(url, questions, c, max_requests, max_seconds) for c in (1, 8)]
        return {"rss_after_load_mib": after_load, "rss_after_load_test_mib": rss_mib(pid), "http": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=int(os.environ.get("BENCH_ARTICLES", 200)))
    parser.add_argument("--questions", type=int, default=int(os.environ.get("BENCH_QUESTIONS", 100)))
    parser.add_argument("--max-seconds", type=float, default=float(os.environ.get("BENCH_MAX_SECONDS", 120)))
    parser.add_argument("--soak-seconds", type=float, default=float(os.environ.get("BENCH_SOAK_SECONDS", 600)),
                        help="the soak at concurrency 8 (0: none)")
    parser.add_argument("--name", default=os.environ.get("BENCH_NAME", "bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", type=Path, help="build in this new folder and keep it (corpus copy and index)")
    parser.add_argument("--backend-passages", type=int, default=int(os.environ.get("BENCH_BACKEND_PASSAGES", 512)),
                        help="passages each embedding backend embeds for its speed and cosine (0: skip backends)")
    parser.add_argument("--first-answer-minutes", type=float,
                        default=float(os.environ.get("BENCH_FIRST_ANSWER_MINUTES", 45)),
                        help="the whole shared corpus from no index under `rag serve --build`, waited for at most "
                             "this long (0: skip)")
    parser.add_argument("--jsquad-recall", action=argparse.BooleanOptionalAction, default=True,
                        help="each backend's JSQuAD dev hybrid R@1 and R@5 (indexes the paragraphs once per backend)")
    args = parser.parse_args()

    shared = Path(os.environ.get("RAG_SHARED", ROOT.parent / "shared"))
    posts = shared / "corpus" / "allforces" / "_posts"
    dev = shared / "eval" / "allforces" / "dev.jsonl"
    if not posts.is_dir() or not dev.is_file():
        raise SystemExit(f"bench: shared data not found under {shared} (set RAG_SHARED)")
    questions = [json.loads(line)["question"] for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = (questions * (args.questions // len(questions) + 1))[: args.questions]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    if args.keep and args.keep.exists():
        raise SystemExit(f"bench: --keep {args.keep} already exists")
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        build = build_bench(posts, args.articles, work, env)
        print(f"build: {json.dumps(build, ensure_ascii=False)}", flush=True)
        from bench.serve_targets import measure

        served = measure(Path(build["index"]), work / "corpus", env, questions, args.questions, args.max_seconds,
                         args.soak_seconds)
        backends = []
        if args.backend_passages:
            jsquad = shared / "eval" / "jsquad" / "valid-v1.1.json"
            backends = compare_backends(Path(build["index"]), args.backend_passages, questions[:30], Settings().model,
                                        jsquad if args.jsquad_recall and jsquad.is_file() else None, ROOT / ".cache" / "backend-reports")
            print(f"backends: {json.dumps(backends)}", flush=True)
        first = None
        if args.first_answer_minutes:
            from bench.first_answer import measure as first_answers

            first = first_answers(posts.parent, work / "first-answer-index", args.first_answer_minutes)
            print(f"first answers: {json.dumps({k: v for k, v in first.items() if k != 'timeline'})}", flush=True)

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "build": {k: v for k, v in build.items() if k != "index"}, **served, "backends": backends,
              "first_answers": first}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.now().strftime('%Y-%m-%d')}-{args.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    print(f"wrote {stem}.md and {stem}.json")


def render_markdown(r: dict) -> str:
    from bench.serve_targets import targets_markdown

    b, m = r["build"], r["machine"]
    lines = [f"# Benchmark {r['date']}", "",
             f"Machine: {m['cores']} cores, {m['cpu']} (flags: {m['cpu_flags']}), Python {m['python']}", "",
             "## Index build (cold)", "",
             f"Embedding backend: `{b['backend']}`", "",
             "| articles | chunks | distinct | seconds | chunks/s | s/article | peak RSS MiB | incremental s |",
             "|---|---|---|---|---|---|---|---|",
             f"| {b['articles']} | {b['chunks']} | {b['distinct_texts']} | {b['cold_seconds']} | {b['chunks_per_second']} "
             f"| {b['seconds_per_article']} | {b['cold_peak_rss_mib']} | {b['incremental_seconds']} |", "",
             "Incremental rebuild after touching one file: `"
             + next((line.strip() for line in b["incremental_output"].splitlines()
                     if line.strip().startswith("embedded")), "")
             + "`", "",
             "## Serving targets (the real server on this index)", "", *targets_markdown(r), ""]
    if r.get("backends"):
        lines += ["## Embedding backends", "", "Passages sampled from the bench index; JSQuAD dev (4,442 questions) "
                  "indexed once per backend.", "", *backends_markdown(r["backends"]), ""]
    if r.get("first_answers"):
        from bench.first_answer import markdown_rows

        first = r["first_answers"]
        lines += [f"## First answers and the full hybrid index ({first['corpus']}, `rag serve --build`, no index "
                  "at the start)", "", *markdown_rows(first), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
