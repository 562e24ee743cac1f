"""The Milvus store against a real `milvus-lite server` on 127.0.0.1 (started once per session, killed at the end):
the same answers as the folder store, updates in place, a rebuild under load, replicas, and Milvus going away."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE_SITE, LiveServer, service_settings

MODEL = str(PROJECT_ROOT / "models/multilingual-e5-small")
QUESTIONS = [line.split("|")[2].strip() for line in (PROJECT_ROOT / "corpus/QUESTIONS.md").read_text().splitlines()
             if line.startswith("| 20")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MilvusServer:
    """`milvus-lite server` on a free port of 127.0.0.1, with a data folder that outlives a stop and a start."""

    def __init__(self, data: Path):
        self.data, self.port = data, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from pymilvus import MilvusClient

        self.process = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, "milvus-lite server exited"
            try:
                client = MilvusClient(uri=self.uri, timeout=2)
                client.list_collections()
                client.close()
                return
            except Exception:  # noqa: BLE001  (not listening yet)
                assert time.monotonic() < deadline, "milvus-lite server did not answer within 60 s"
                time.sleep(0.3)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def milvus(tmp_path_factory):
    server = MilvusServer(tmp_path_factory.mktemp("milvus"))
    server.start()
    yield server
    server.stop()


def milvus_settings(server: MilvusServer, collection: str, corpus: Path = PROJECT_ROOT / "corpus", **overrides):
    from rag.settings import Settings

    values = dict(corpus=corpus, model=MODEL, store="milvus", milvus_uri=server.uri, milvus_collection=collection,
                  **SAMPLE_SITE)
    values.update(overrides)
    return Settings(**values)


def index(settings, embedder, rebuild: bool = False):
    from rag import parts
    from rag.index import build_index

    loaded = parts.corpus(settings)
    return build_index(loaded, parts.store(settings), embedder, parts.chunker_config(settings),
                       parts.build_config(settings), source=parts.corpus_source(settings, loaded), rebuild=rebuild)


@pytest.fixture(scope="session")
def milvus_sample(milvus, embedder):
    """The sample corpus indexed into Milvus collection `sample`: its settings."""
    settings = milvus_settings(milvus, "sample")
    index(settings, embedder, rebuild=True)
    return settings


@pytest.fixture(scope="session")
def milvus_engine(milvus_sample, embedder):
    from rag.engine import Engine

    engine = Engine(milvus_sample, embedder)
    yield engine
    engine.close()


TIE = 1e-4  # scores this close are a tie (float32 vs float64 sums): two stores may order tied passages either way


def top5(engine, question: str, mode, filters=None) -> list[tuple[float, tuple]]:
    from rag.types import Filters

    hits = engine.retriever.search(engine.analyse(question), 5, filters or Filters(), mode=mode).hits
    return [(h.score, (h.article.article_id, h.chunk.ordinal, h.also_in)) for h in hits]


def assert_same_ranking(got: list[tuple[float, tuple]], want: list[tuple[float, tuple]], what) -> None:
    """The same scores rank by rank, and the same passages, compared as a set within each run of tied scores."""
    assert [s for s, _ in got] == pytest.approx([s for s, _ in want], abs=TIE), what
    start = 0
    for end in range(1, len(want) + 1):
        if end == len(want) or want[end][0] < want[end - 1][0] - TIE:
            assert {k for _, k in got[start:end]} == {k for _, k in want[start:end]}, what
            start = end


# ---------------------------------------------------------------- the same answers as the folder store


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "dense"])
def test_the_same_top_5_as_the_folder_store(engine, milvus_engine, mode):
    from rag.retrieval import Mode

    for question in QUESTIONS:
        assert_same_ranking(top5(milvus_engine, question, Mode(mode)), top5(engine, question, Mode(mode)), question)


def test_hnsw_gives_the_dense_top_5_on_a_small_index(engine, milvus, embedder):
    from rag.engine import Engine
    from rag.retrieval import Mode

    settings = milvus_settings(milvus, "hnsw", milvus_dense_index="HNSW")
    index(settings, embedder, rebuild=True)
    hnsw = Engine(settings, embedder)
    try:
        assert hnsw.store.manifest.dense.search.startswith("HNSW")
        for question in QUESTIONS[:10]:  # ef (128) covers all 90 passages: as exact as FLAT
            assert_same_ranking(top5(hnsw, question, Mode.DENSE), top5(engine, question, Mode.DENSE), question)
    finally:
        hnsw.close()


def test_filters_are_pushed_down_with_the_folder_stores_result(engine, milvus_engine):
    from datetime import date

    from rag.retrieval import Mode
    from rag.types import Filters

    category = engine.facets().categories[0]
    for filters in (Filters(category=category), Filters(date_from=date(2025, 4, 1), date_to=date(2025, 8, 31)),
                    Filters(category="存在しないカテゴリ")):
        assert milvus_engine.store.matches_any(filters) == engine.store.matches_any(filters)
        for question in QUESTIONS[:10]:
            assert_same_ranking(top5(milvus_engine, question, Mode.HYBRID, filters),
                                top5(engine, question, Mode.HYBRID, filters), (question, filters))


def test_a_repeated_passage_is_stored_once_with_also_in(engine, milvus_engine):
    from rag.index.folder import text_hash
    from rag.index.milvus import text_key
    from rag.types import Filters

    folder, store = engine.store, milvus_engine.store
    assert store.manifest.counts == folder.manifest.counts
    repeated = [t for t in range(folder.size) if folder.recurrence(t) > 1]
    assert repeated, "the sample corpus repeats a passage"
    for text_id in repeated:
        want = folder.passage(text_id, Filters())
        got = store.passage(text_key(text_hash(want.chunk.text)), Filters())
        assert (got.article.article_id, got.chunk, got.also_in, got.n_articles) == (
            want.article.article_id, want.chunk, want.also_in, want.n_articles)
        assert got.article == want.article


def test_facets_and_the_manifest_check(engine, milvus_engine, milvus_sample):
    from rag import parts
    from rag.errors import IndexMismatch

    got, want = milvus_engine.facets(), engine.facets()
    assert (got.categories, got.date_from, got.date_to) == (want.categories, want.date_from, want.date_to)
    assert [a.article_id for a in got.newest] == [a.article_id for a in want.newest]

    class OtherModel:  # the manifest check compares the model's description only
        model_id, backend, dim, query_prompt, passage_prompt = "other-model", "torch", 384, "query: ", "passage: "

    with pytest.raises(IndexMismatch, match="other-model"):
        parts.store(milvus_sample).open(OtherModel())


# ---------------------------------------------------------------- updates


def test_an_update_writes_only_the_changed_articles_and_deletes_the_removed(milvus, embedder, tmp_path):
    from rag import parts
    from rag.types import Filters

    corpus = tmp_path / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus", corpus)
    settings = milvus_settings(milvus, "update", corpus)
    first = index(settings, embedder, rebuild=True)
    posts = sorted((corpus / "_posts").glob("*.md"))
    changed, removed = posts[0], posts[1]
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\n追記：ペンギンの行進は毎朝九時に始まる。\n",
                       encoding="utf-8")
    removed_id = removed.stem
    removed.unlink()

    report = index(settings, embedder)
    assert report.files_changed == [changed.name] and report.files_deleted == [removed.name]
    assert 1 <= report.embedded <= 2 and report.reused > 0
    assert report.generation.split(".")[0] == first.generation.split(".")[0]  # the same collections, in place
    assert report.generation != first.generation
    store = parts.open_store(settings, embedder)
    try:
        assert store.article(removed_id) is None
        assert store.manifest.counts.articles == first.articles - 1
        best = max((hits := store.term_search(["ペンギン", "行進"], 5, Filters())), key=hits.get)
        assert store.passage(best, Filters()).article.path == changed.name
        nearest = store.dense_search(embedder.encode_queries(["富士山"])[0], 100, Filters())
        assert removed_id not in {store.passage(t, Filters()).article.article_id for t in nearest}
    finally:
        store.close()


# ---------------------------------------------------------------- the service


def ask(client: httpx.Client, url: str, question: str) -> httpx.Response:
    return client.post(f"{url}/ask", json={"question": question}, timeout=30)


@pytest.mark.slow
def test_a_rebuild_under_load_fails_no_request(milvus, embedder):
    from rag.service import create_app

    settings = milvus_settings(milvus, "rebuild", reload_poll_seconds=0.2, admin_api_key="k")
    before = index(settings, embedder, rebuild=True).generation
    statuses: list[int] = []
    generations: set[str] = set()
    stop = threading.Event()
    with LiveServer(create_app(settings, embedder=embedder), settings) as server:
        with httpx.Client() as client:
            deadline = time.monotonic() + 60
            while client.get(f"{server.url}/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)

            def load() -> None:
                with httpx.Client() as c:
                    i = 0
                    while not stop.is_set():
                        statuses.append(ask(c, server.url, QUESTIONS[i % len(QUESTIONS)]).status_code)
                        i += 1

            threads = [threading.Thread(target=load) for _ in range(2)]
            for t in threads:
                t.start()
            after = index(settings, embedder, rebuild=True).generation
            deadline = time.monotonic() + 30
            while after not in generations:
                assert time.monotonic() < deadline, "the service did not switch to the rebuilt generation"
                generations.add(client.get(f"{server.url}/readyz").json()["generation"])
                time.sleep(0.2)
            time.sleep(1)  # requests on the new generation too
            stop.set()
            for t in threads:
                t.join()
    assert after != before
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests, statuses {set(statuses)}"


@pytest.mark.slow
def test_milvus_stopped_mid_load_gives_503_then_recovers(milvus, milvus_sample, milvus_engine):
    from rag.service import create_app

    settings = milvus_sample.model_copy(update={"milvus_timeout": 2.0})
    with LiveServer(create_app(settings, engine=milvus_engine), settings) as server, httpx.Client() as client:
        assert ask(client, server.url, QUESTIONS[0]).status_code == 200
        milvus.stop()
        try:
            for question in QUESTIONS[:3]:
                started = time.monotonic()
                response = ask(client, server.url, question)
                assert response.status_code == 503, response.text
                assert "cannot be reached" in response.json()["error"] and "Traceback" not in response.text
                assert time.monotonic() - started < 5
        finally:
            milvus.start()
        deadline = time.monotonic() + 30
        while (response := ask(client, server.url, QUESTIONS[0])).status_code != 200:
            assert response.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.5)


def test_unreachable_at_start_readyz_says_so(embedder):
    from rag.service import create_app

    settings = service_settings(PROJECT_ROOT / "indexes/none", store="milvus",
                                milvus_uri=f"http://127.0.0.1:{free_port()}", milvus_token="s3cret-token")
    with LiveServer(create_app(settings, embedder=embedder), settings) as server, httpx.Client() as client:
        deadline = time.monotonic() + 30
        while (response := client.get(f"{server.url}/readyz")).json().get("state") == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert response.status_code == 503
        assert "cannot be reached" in response.json()["error"] and "RAG_MILVUS_URI" in response.json()["error"]
        assert "s3cret-token" not in response.text
        assert client.post(f"{server.url}/ask", json={"question": "富士山の高さは？"}).status_code == 503


@pytest.mark.parametrize("uri, message", [("ftp://nowhere", "neither a file path nor"),
                                          (None, "cannot be reached")])
def test_a_bad_uri_is_one_line_from_the_cli(monkeypatch, capsys, uri, message):
    from rag.cli import main

    monkeypatch.setenv("RAG_STORE", "milvus")
    monkeypatch.setenv("RAG_MILVUS_URI", uri or f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("RAG_MILVUS_TOKEN", "s3cret-token")
    assert main(["index", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rag: error: ") and message in err, err
    assert "s3cret-token" not in err


# ---------------------------------------------------------------- replicas


@pytest.fixture()
def replicas(milvus, embedder, tmp_path):
    """Two `rag serve` processes on one Milvus collection (over a copy of the sample corpus); yields their URLs."""
    corpus = tmp_path / "corpus"
    shutil.copytree(PROJECT_ROOT / "corpus", corpus)
    settings = milvus_settings(milvus, "replicas", corpus)
    index(settings, embedder, rebuild=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT), "RAG_STORE": "milvus",
           "RAG_MILVUS_URI": milvus.uri, "RAG_MILVUS_COLLECTION": "replicas", "RAG_MODEL": MODEL,
           "RAG_RELOAD_POLL_SECONDS": "0.5", "RAG_QUERY_LOG": "off", "RAG_TORCH_THREADS": "1"}
    processes, urls = [], []
    for _ in range(2):
        port = free_port()
        processes.append(subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port)],
                                          cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        with httpx.Client() as client:
            for url, process in zip(urls, processes):
                deadline = time.monotonic() + 120
                while True:
                    assert process.poll() is None, "rag serve exited"
                    try:
                        if client.get(f"{url}/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "a replica did not become ready"
                    time.sleep(0.5)
        yield settings, corpus, urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.slow
def test_two_replicas_answer_alike_and_an_update_reaches_both(replicas, embedder):
    settings, corpus, urls = replicas
    with httpx.Client() as client:
        for question in QUESTIONS[:5]:
            answers = [ask(client, url, question).json() for url in urls]
            assert [a["answer"] for a in answers[1:]] == [answers[0]["answer"]], question
        before = {client.get(f"{url}/readyz").json()["generation"] for url in urls}
        assert len(before) == 1
        post = sorted((corpus / "_posts").glob("*.md"))[0]
        post.write_text(post.read_text(encoding="utf-8") + "\n\n追記：ペンギンの行進は毎朝九時に始まる。\n",
                        encoding="utf-8")
        after = index(settings, embedder).generation
        deadline = time.monotonic() + 30
        while {client.get(f"{url}/readyz").json()["generation"] for url in urls} != {after}:
            assert time.monotonic() < deadline, "the update did not reach both replicas"
            time.sleep(0.3)
        for url in urls:
            cited = ask(client, url, "ペンギンの行進は何時に始まる？").json()
            assert any(c["article_id"] == post.stem for c in cited["citations"]), cited
