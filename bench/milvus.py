"""The folder store against milvus-lite server: build time, POST /ask p50/p95 at c=1 and c=8, memory, eval figures.

    python bench/milvus.py --folder /work/eval/full        # an existing folder index (its vectors are reused)
    python bench/milvus.py --articles 300                  # or: index a subset of the shared corpus first

The folder index is built (or taken as it is); Milvus is filled from that index's stored vectors through the
Milvus store's IndexWriter (no re-embedding), on a `milvus-lite server` this script starts on 127.0.0.1. Then
`rag serve` runs on each store in turn under the allforces dev questions at concurrency 1 and 8 (bench/run.py's
load test), the service's and the Milvus process's RSS are read, and `rag eval --retriever all` runs on both.
Results: bench/results/<date>-milvus.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RAG, ROOT, build_bench, free_port, machine, rss_mib, serve_bench  # noqa: E402

from rag.index.folder import FolderConfig, FolderIndex, FolderStore  # noqa: E402
from rag.index.milvus import MilvusConfig, MilvusStore  # noqa: E402
from rag.index.store import Description, StoreKind  # noqa: E402

COLLECTION = "bench"


@dataclass(frozen=True)
class BuiltWith:
    """The model a folder index was built with, as the writer records it (no model is loaded)."""

    model_id: str
    backend: str
    dim: int
    query_prompt: str
    passage_prompt: str


def fill_from_folder(folder: Path, store: StoreKind) -> dict:
    """Write the folder index's live generation into a store: its articles, chunks and stored vectors."""
    started = time.perf_counter()
    source = FolderIndex.open(folder, searching=False)
    model = source.manifest.model
    writer = store.writer(BuiltWith(model.id, model.backend, model.dim, model.query_prompt, model.passage_prompt),
                          rebuild=True)
    try:
        vectors = source.vectors()
        writer.put_vectors({h: vectors[row] for row, h in source.db.execute("SELECT text_id, text_hash FROM texts")})
        for (path,) in source.db.execute("SELECT path FROM articles ORDER BY path").fetchall():
            article = source.article_at(path)
            writer.put(article, source.chunks_of_article(article.article_id))
        m = source.manifest
        manifest = writer.commit(Description(
            embedder=writer.embedder, chunker=m.chunker, source=m.source, malformed_files=m.counts.malformed_files,
            started=started, embed_seconds=0.0, embedded=0, reused=m.counts.distinct_texts))
    finally:
        writer.close()
        source.close()
    return {"seconds": round(time.perf_counter() - started, 1), "passages": manifest.counts.distinct_texts,
            "articles": manifest.counts.articles}


def folder_size_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def start_milvus(data: Path) -> tuple[subprocess.Popen, str]:
    from pymilvus import MilvusClient

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host",
                                "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            MilvusClient(uri=uri, timeout=2).list_collections()
            return process, uri
        except Exception:  # noqa: BLE001  (not listening yet)
            time.sleep(0.5)
    raise SystemExit("bench: milvus-lite server did not start")


def evaluate(env: dict, dataset: Path, out: Path) -> dict:
    """`rag eval --retriever all` on the store `env` names: each mode's figures from its report."""
    subprocess.run(RAG + ["eval", "--dataset", str(dataset), "--retriever", "all", "--out", str(out), "--quiet"],
                   env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    figures = {}
    for result in json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]:
        recall = {f"hit@{k}": v for k, v in result["recall"].items()}
        figures[result["mode"]] = {**recall, **{k: v for k, v in result.items() if isinstance(v, float)
                                                and not k.startswith("latency")}}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="an existing folder index (default: index --articles first)")
    parser.add_argument("--articles", type=int, default=300)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    shared = Path(os.environ.get("RAG_SHARED", ROOT.parent / "shared"))
    dev = shared / "eval" / "allforces" / "dev.jsonl"
    questions = [json.loads(line)["question"] for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = (questions * (args.questions // len(questions) + 1))[: args.questions]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    with tempfile.TemporaryDirectory(prefix="rag-bench-milvus-") as tmp:
        work = Path(tmp)
        if args.folder:
            folder, build = args.folder, {"folder": str(args.folder)}
        else:
            build = build_bench(shared / "corpus" / "allforces" / "_posts", args.articles, work, env)
            folder = Path(build.pop("index"))
        build["write_from_vectors"] = fill_from_folder(folder, FolderStore(FolderConfig(work / "copy", 0.9, 0.4)))
        print(f"folder: {json.dumps(build, ensure_ascii=False)}", flush=True)

        milvus, uri = start_milvus(work / "milvus")
        try:
            empty = rss_mib(milvus.pid)
            config = MilvusConfig(uri, SecretStr(""), COLLECTION, 30.0, 0.9, 0.4)
            fill = fill_from_folder(folder, MilvusStore(config))
            filled = rss_mib(milvus.pid)
            fill.update(milvus_rss_empty_mib=empty, milvus_rss_filled_mib=filled,
                        milvus_data_mib=folder_size_mib(work / "milvus"), folder_index_mib=folder_size_mib(folder),
                        milvus_mib_per_million_passages=round((filled - empty) / fill["passages"] * 1e6))
            print(f"milvus fill: {json.dumps(fill)}", flush=True)
            folder_env = {**env, "RAG_INDEX": str(folder), "RAG_QUERY_LOG": "off"}
            milvus_env = {**folder_env, "RAG_STORE": "milvus", "RAG_MILVUS_URI": uri,
                          "RAG_MILVUS_COLLECTION": COLLECTION}
            served = {}
            for name, store_env in (("folder", folder_env), ("milvus", milvus_env)):
                served[name] = serve_bench(str(folder), questions, store_env, args.questions, args.max_seconds)
                print(f"served {name}: {json.dumps(served[name])}", flush=True)
            served["milvus"]["milvus_rss_after_load_test_mib"] = rss_mib(milvus.pid)
            figures = {name: evaluate(store_env, dev, work / f"eval-{name}")
                       for name, store_env in (("folder", folder_env), ("milvus", milvus_env))}
            print(f"eval: {json.dumps(figures)}", flush=True)
        finally:
            milvus.terminate()
            milvus.wait(timeout=30)

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "folder_build": build, "milvus_fill": fill, "served": served, "eval": figures}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.now().strftime('%Y-%m-%d')}-milvus"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    stem.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    print(f"wrote {stem}.md and {stem}.json")


def render_markdown(r: dict) -> str:
    b, f, s = r["folder_build"], r["milvus_fill"], r["served"]
    lines = [f"# Folder store against milvus-lite server ({r['date']})", "",
             f"Machine: {r['machine']['cores']} cores, {r['machine']['cpu']}. Command: `python bench/milvus.py "
             f"{'--folder ' + b['folder'] if 'folder' in b else '--articles ' + str(b['articles'])}`.", "",
             "## Build", "", "| store | what | seconds |", "|---|---|---|"]
    if "cold_seconds" in b:
        lines += [f"| folder | `rag index`, {b['articles']} articles, {b['distinct_texts']} passages, embedding "
                  f"included ({b['embed_seconds']} s) | {b['cold_seconds']} |",
                  f"| folder | the same without embedding | {round(b['cold_seconds'] - b['embed_seconds'], 1)} |"]
    lines += [f"| folder | written from the folder index's vectors ({b['write_from_vectors']['passages']} passages, "
              f"no embedding) | {b['write_from_vectors']['seconds']} |",
              f"| milvus | filled from the folder index's vectors ({f['passages']} passages, no embedding) | "
              f"{f['seconds']} |", "",
              "## POST /ask through `rag serve`", "",
              "| store | concurrency | requests | errors | p50 ms | p95 ms | p99 ms | req/s |",
              "|---|---|---|---|---|---|---|---|"]
    for name in ("folder", "milvus"):
        for run in s[name]["http"]:
            lines.append(f"| {name} | {run['concurrency']} | {run['requests']} | {run['errors']} | {run['p50']} | "
                         f"{run['p95']} | {run['p99']} | {run['req_per_s']} |")
    lines += ["", "## Memory", "",
              f"- service RSS, folder: {s['folder']['rss_after_load_mib']} MiB after load, "
              f"{s['folder']['rss_after_load_test_mib']} MiB after the load tests",
              f"- service RSS, milvus: {s['milvus']['rss_after_load_mib']} MiB after load, "
              f"{s['milvus']['rss_after_load_test_mib']} MiB after the load tests",
              f"- milvus-lite server RSS: {f['milvus_rss_empty_mib']} MiB empty, {f['milvus_rss_filled_mib']} MiB "
              f"filled, {s['milvus']['milvus_rss_after_load_test_mib']} MiB after the load tests; "
              f"(filled - empty) / passages = {f['milvus_mib_per_million_passages']} MiB per million passages",
              f"- on disk: milvus-lite data {f['milvus_data_mib']} MiB, folder index {f['folder_index_mib']} MiB", "",
              "## rag eval --retriever all (allforces dev)", "",
              "| mode | measure | folder | milvus |", "|---|---|---|---|"]
    for mode, figures in r["eval"]["folder"].items():
        for key, value in figures.items():
            other = r["eval"]["milvus"].get(mode, {}).get(key)
            lines.append(f"| {mode} | {key} | {value:.4f} | {other:.4f} |" if other is not None else
                         f"| {mode} | {key} | {value:.4f} | — |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
