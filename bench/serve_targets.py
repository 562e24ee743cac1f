"""The serving targets of issue 17, each printed beside its measured figure, on an existing index.

    python bench/serve_targets.py --index DIR --corpus DIR [--soak-seconds 600] [--name NAME]

The index and its corpus are copied into a work folder first (the originals are left alone). Then, against
the real `rag serve` on the copy:
- POST /ask at concurrency 1 and 8 (the allforces dev questions), and the service's RSS after it;
- a soak at concurrency 8 for `--soak-seconds`, RSS sampled every 5 s;
- one article changed, one added and the same one deleted: the wall time of `rag index` for each, and how
  long after it the running service answers from (or no longer cites) that article;
- the in-process time of each step of an ask (embed, search, compose), with the serving settings;
- the cosine of the service's question vectors to torch fp32's.
Results: bench/results/<date>-<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import RAG, load_test, machine, percentiles, rss_mib, running_server  # noqa: E402
from rag.settings import Settings  # noqa: E402

GIB = 1024.0
# A fact no article of the shared corpus states, appended to one article, and one of a new article.
CHANGED = ("\n\nベンチマーク用の追記です。サンプル電機は2031年に月面データセンター「ルナコア」を開設すると発表した。\n",
           "ルナコアを開設するのはいつですか？", "ルナコア")
ADDED = ("---\ntitle: ミライ重工、水素飛行機ソラハナを発表\ndate: 2026-12-01 09:00:00 +0900\ncategories: [ニュース]\n---\n\n"
         "ミライ重工は水素で飛ぶ旅客機「ソラハナ」を発表した。ソラハナは2032年に就航する計画だ。\n\n"
         "同社によると、ソラハナの航続距離は1200キロメートルである。\n",
         "ソラハナはいつ就航する予定ですか？", "ソラハナ")


def ask(url: str, question: str) -> dict:
    return httpx.post(f"{url}/ask", json={"question": question}, timeout=30).json()


def quotes(answer: dict, article_id: str, marker: str) -> bool:
    """The answer quotes `marker` from that article."""
    return any(c["article_id"] == article_id and marker in c["quote"] for c in answer.get("citations", []))


def timed_update(corpus: Path, index: Path, env: dict, url: str, article_id: str, question: str, marker: str,
                 present: bool) -> dict:
    """`rag index` after a change, then how long until the service's answer quotes `marker` from the article (or
    no longer does)."""
    started = time.perf_counter()
    proc = subprocess.run(RAG + ["index", "--corpus", str(corpus), "--index", str(index), "--quiet"], env=env,
                          cwd=ROOT, capture_output=True, text=True)
    index_seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: rag index failed: {proc.stderr.strip()[-500:]}")
    done = time.perf_counter()
    while time.perf_counter() - done < 60:
        if quotes(ask(url, question), article_id, marker) == present:
            break
        time.sleep(0.05)
    else:
        return {"index_seconds": round(index_seconds, 2), "visible_after_seconds": None, "output": proc.stdout}
    return {"index_seconds": round(index_seconds, 2), "visible_after_seconds": round(time.perf_counter() - done, 2),
            "output": proc.stdout.strip()}


def soak(url: str, pid: int, questions: list[str], seconds: float) -> dict:
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5):
            samples.append(rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run = load_test(url, questions, 8, 10**9, seconds)
    stop.set()
    sampler.join()
    first, last = (samples[0], samples[-1]) if samples else (0.0, 0.0)
    return {**run, "rss_first_mib": first, "rss_last_mib": last, "rss_max_mib": max(samples, default=0.0),
            "rss_change": round((max(samples, default=0.0) - first) / first, 4) if first else None}


def step_times(index: Path, questions: list[str]) -> dict:
    from rag.engine import Engine
    from rag.service.launcher import serving_settings

    engine = Engine(serving_settings(Settings(index=index)))
    times: dict[str, list[float]] = {"embed": [], "search": [], "compose": [], "total": []}
    for question in questions:
        answer = engine.ask(question)
        for part in times:
            times[part].append(answer.timings_ms[part])
    engine.close()
    return {part: {"p50": round(statistics.median(v), 1), **percentiles(v)} for part, v in times.items()}


def query_cosine(questions: list[str]) -> dict:
    from rag import parts
    from rag.embeddings import create_embedder
    from rag.service.launcher import serving_settings

    settings = serving_settings(Settings())
    served = parts.embedder(settings)
    fp32 = create_embedder("torch", settings.model, query_prompt=settings.query_prompt,
                           passage_prompt=settings.passage_prompt)
    cosines = np.sum(served.encode_queries(questions) * fp32.encode_queries(questions), axis=1)
    return {"backend": served.backend, "min": round(float(cosines.min()), 7), "mean": round(float(cosines.mean()), 7)}


def targets(r: dict) -> list[tuple[str, str, str, bool]]:
    """(target, threshold, measured, met) for every target of the issue."""
    c1, c8 = r["http"][0], r["http"][1]
    rows = [("POST /ask c=1 p50", "≤ 15 ms", f"{c1['p50']} ms", c1["p50"] <= 15),
            ("POST /ask c=1 p99", "≤ 30 ms", f"{c1['p99']} ms", c1["p99"] <= 30),
            ("POST /ask c=8 throughput", "≥ 100 req/s", f"{c8['req_per_s']} req/s", c8["req_per_s"] >= 100),
            ("POST /ask c=8 p99", "≤ 150 ms", f"{c8['p99']} ms", c8["p99"] <= 150),
            ("POST /ask c=8 errors", "0", str(c8["errors"]), c8["errors"] == 0),
            ("service RSS after the load test", "≤ 1.2 GiB", f"{r['rss_after_load_test_mib'] / GIB:.2f} GiB",
             r["rss_after_load_test_mib"] <= 1.2 * GIB)]
    s = r["soak"]
    if s:
        rows.append((f"RSS over a {s['seconds']:.0f} s soak at c=8", "within 5%",
                     f"{s['rss_first_mib']:.0f} → max {s['rss_max_mib']:.0f} MiB ({100 * (s['rss_change'] or 0):+.1f}%)",
                     s["rss_change"] is not None and abs(s["rss_change"]) <= 0.05))
    for what, u in r["updates"].items():
        rows.append((f"{what} article: `rag index` wall", "≤ 5 s", f"{u['index_seconds']} s", u["index_seconds"] <= 5))
        seen = u["visible_after_seconds"]
        rows.append((f"{what} article: the service answers from it", "≤ 2 s later",
                     "not within 60 s" if seen is None else f"{seen} s", seen is not None and seen <= 2))
    q = r["query_cosine"]
    rows.append((f"question vectors ({q['backend']}) against torch fp32", "cosine ≥ 0.9999", f"min {q['min']}",
                 q["min"] >= 0.9999))
    return rows


def targets_markdown(r: dict) -> list[str]:
    """The targets table, then the measurements behind it."""
    lines = ["| target | wanted | measured | met |", "|---|---|---|---|"]
    lines += [f"| {t} | {want} | {got} | {'yes' if ok else 'no'} |" for t, want, got, ok in targets(r)]
    lines += ["", "## POST /ask", "", "| concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {h['concurrency']} | {h['requests']} | {h['errors']} | {h['req_per_s']} | {h['p50']} | {h['p95']} "
              f"| {h['p99']} |" for h in [*r["http"], *([r["soak"]] if r["soak"] else [])]]
    lines += ["", f"RSS: {r['rss_after_load_mib']} MiB after load, {r['rss_after_load_test_mib']} MiB after the "
              f"load tests.", "", "## One ask in process, by step (serving settings)", "",
              "| step | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['p50']} | {v['p95']} | {v['p99']} |" for k, v in r["steps_ms"].items()]
    lines += ["", "## Updates", ""]
    lines += [f"- {what}: `rag index` {u['index_seconds']} s, answered from {u['visible_after_seconds']} s later; "
              f"`{' / '.join(line.strip() for line in u['output'].splitlines()[2:6])}`" for what, u in r["updates"].items()]
    return lines


def render(r: dict) -> str:
    m = r["machine"]
    return "\n".join([f"# Serving targets {r['date']}", "",
                      f"Machine: {m['cores']} cores, {m['cpu']} (flags: {m['cpu_flags']}), Python {m['python']}.",
                      f"Index: {r['index']['passages']} passages of {r['index']['articles']} articles. "
                      f"Command: `python bench/serve_targets.py {r['command']}`", "", *targets_markdown(r)]) + "\n"


def measure(index: Path, corpus: Path, env: dict, questions: list[str], requests: int, load_seconds: float,
            soak_seconds: float) -> dict:
    """Every measurement of the targets, on an index and its corpus folder that it may change."""
    with running_server(str(index), env) as (url, pid):
        after_load = rss_mib(pid)
        http = [load_test(url, questions, c, requests, load_seconds) for c in (1, 8)]
        after_test = rss_mib(pid)
        print(f"http: {json.dumps(http)}; RSS {after_load} -> {after_test} MiB", flush=True)
        soaked = {**soak(url, pid, questions, soak_seconds), "seconds": soak_seconds} if soak_seconds else None
        print(f"soak: {json.dumps(soaked)}", flush=True)
        posts = corpus / "_posts" if (corpus / "_posts").is_dir() else corpus
        files = sorted(posts.glob("*.md"))
        changed = files[len(files) // 2]
        changed.write_text(changed.read_text(encoding="utf-8") + CHANGED[0], encoding="utf-8")
        updates = {"changed": timed_update(corpus, index, env, url, changed.stem, *CHANGED[1:], True)}
        added = posts / "2026-12-01-mirai-sorahana.md"
        added.write_text(ADDED[0], encoding="utf-8")
        updates["added"] = timed_update(corpus, index, env, url, added.stem, *ADDED[1:], True)
        added.unlink()
        updates["deleted"] = timed_update(corpus, index, env, url, added.stem, *ADDED[1:], False)
        print(f"updates: {json.dumps(updates, ensure_ascii=False)}", flush=True)
    counts = json.loads((index / (index / "CURRENT").read_text().strip() / "manifest.json").read_text())["counts"]
    return {"index": {"articles": counts["articles"], "passages": counts["distinct_texts"]}, "http": http,
            "rss_after_load_mib": after_load, "rss_after_load_test_mib": after_test, "soak": soaked,
            "updates": updates, "steps_ms": step_times(index, questions[:50]),
            "query_cosine": query_cosine(questions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="an index built from --corpus")
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder the index was built from")
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency")
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--name", default="serve-targets")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="rag-targets-") as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        shutil.copytree(args.corpus, corpus)
        shutil.copytree(args.index, index, ignore=shutil.ignore_patterns(".lock", "*.pending.sqlite", "BUILDING.json"))
        measured = measure(index, corpus, env, dev_questions(), args.requests, 300, args.soak_seconds)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "command": " ".join(sys.argv[1:]), **measured}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.now().strftime('%Y-%m-%d')}-{args.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text(render(result), encoding="utf-8")
    print(render(result))
    print(f"wrote {stem}.md and {stem}.json")


def dev_questions() -> list[str]:
    dev = Settings().shared / "eval" / "allforces" / "dev.jsonl"
    return [json.loads(line)["question"] for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]


if __name__ == "__main__":
    main()
