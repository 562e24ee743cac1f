"""Progressive indexing on the real model and the sample articles: a first build serves keyword search from a
terms-only generation while it embeds, says how far it is (/readyz, /api/facets), swaps in the hybrid index,
and a build that is killed resumes without embedding again what it had saved."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import httpx
import pytest

from rag import parts
from rag.index import FolderIndex, build_index
from rag.index.folder import CURRENT, PENDING_VECTORS, PROGRESS, FolderConfig, FolderStore
from rag.service import create_app
from rag.service.launcher import needs_build
from tests.conftest import PROJECT_ROOT, SAMPLE_SITE, LiveServer, build_sample_index, service_settings
from tests.test_service import wait_for


def test_a_first_build_answers_by_keywords_until_its_vectors_are_in(sample_corpus, engine, tmp_path):
    index = tmp_path / "progressive"
    settings = service_settings(index, corpus=sample_corpus, reload_poll_seconds=0.1, terms_first_from=0,
                                vector_checkpoint=16, **SAMPLE_SITE)
    seen: dict = {}
    with LiveServer(create_app(settings, embedder=engine.embedder)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:

        def terms_first(report) -> None:  # the build waits here: the service must pick up the terms-only index
            seen["first"] = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r.json())
            seen["answer"] = client.post("/ask", json={"question": "東京スカイツリーの高さは？"}).json()

        def embedding(_: int) -> None:
            build = client.get("/readyz").json()["build"]
            if build["phase"] == "embedding" and "mid" not in seen:
                seen["mid"] = build
                seen["facets"] = client.get("/api/facets").json()

        loaded = parts.corpus(settings)
        report = build_index(loaded, parts.store(settings), engine.embedder, parts.chunker_config(settings),
                             parts.build_config(settings), source=parts.corpus_source(settings, loaded),
                             on_terms_first=terms_first, progress=embedding)
        final = wait_for(lambda: (r := client.get("/readyz").json())["search"] == "hybrid" and r)
        hybrid_answer = client.post("/ask", json={"question": "東京スカイツリーの高さは？"}).json()

    first = seen["first"]
    assert first["search"] == "bm25" and first["vectors"] == {"done": 0, "total": report.distinct_texts}
    assert first["build"]["phase"] == "writing"
    assert "634メートル" in seen["answer"]["answer"] and seen["answer"]["citations"]
    mid = seen["mid"]
    assert 0 < mid["fraction"] < 1 and mid["passages"] == report.distinct_texts
    assert seen["facets"]["search"] == "bm25" and seen["facets"]["build"]["phase"] == "embedding"
    assert final["vectors"]["done"] == final["vectors"]["total"] == report.distinct_texts
    assert final["build"] is None and final["generation"] == report.generation
    assert "634メートル" in hybrid_answer["answer"]
    assert report.terms_first_seconds is not None and report.embedded == report.distinct_texts
    assert not (index / PENDING_VECTORS).exists() and not (index / PROGRESS).exists()


def test_an_update_of_a_complete_index_keeps_it_serving_until_the_end(sample_index, embedder, tmp_path):
    """No terms-only step when a hybrid index is live: readers keep dense search through the whole update."""
    import shutil

    index = tmp_path / "updated"
    shutil.copytree(sample_index[0], index)
    corpus = tmp_path / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus", corpus)
    post = sorted((corpus / "_posts").glob("*.md"))[0]
    post.write_text(post.read_text(encoding="utf-8") + "\n\n追記の段落です。新しい内容を加えました。\n", encoding="utf-8")
    generations = []
    report = build_sample_index(corpus, index, embedder, on_terms_first=lambda r: generations.append(r))
    assert generations == [] and report.terms_first_seconds is None and report.embedded >= 1
    assert FolderIndex.open(index).manifest.has_vectors


@pytest.mark.slow
def test_a_killed_build_resumes_without_embedding_again(sample_corpus, embedder, tmp_path):
    index = tmp_path / "killed"
    env = {**os.environ, "RAG_CORPUS": str(sample_corpus), "RAG_INDEX": str(index),
           "RAG_MODEL": str(PROJECT_ROOT / "models/multilingual-e5-small"), "RAG_SITE_URL": SAMPLE_SITE["site_url"],
           "RAG_PERMALINK": SAMPLE_SITE["permalink"], "RAG_TERMS_FIRST_FROM": "0", "RAG_VECTOR_CHECKPOINT": "8",
           "RAG_EMBED_BATCH_SIZE": "8", "RAG_TORCH_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    build = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--quiet"], cwd=PROJECT_ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def saved() -> int:
        try:
            with sqlite3.connect(f"file:{index / PENDING_VECTORS}?mode=ro", uri=True) as db:
                return db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        except sqlite3.Error:  # not created yet, or being written
            return 0

    try:
        wait_for(lambda: saved() >= 24, timeout=240)
        assert build.poll() is None, "the build ended before it could be killed"
        build.send_signal(signal.SIGKILL)
    finally:
        build.kill()
        build.wait()
    kept = saved()
    store = FolderStore(FolderConfig(index, 0.9, 0.4))
    assert (index / CURRENT).exists() and not store.manifest().has_vectors  # the terms-only generation is live
    assert store.progress() is None  # the record of a dead build is not shown as running
    assert needs_build(service_settings(index))  # `rag serve --build` would resume it

    report = build_sample_index(sample_corpus, index, embedder)
    assert report.reused == kept and report.embedded == report.distinct_texts - kept
    assert store.manifest().has_vectors and not (index / PENDING_VECTORS).exists()
    assert not needs_build(service_settings(index))
