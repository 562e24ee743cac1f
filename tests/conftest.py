"""Shared fixtures: the shared data folder (skip when absent) and env isolation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch):
    """Tests see only the RAG_* variables they set themselves (RAG_SHARED excepted)."""
    for name in list(os.environ):
        if name.startswith("RAG_") and name != "RAG_SHARED":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(os.environ.get("RAG_SHARED", PROJECT_ROOT.parent / "shared")).resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set RAG_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_posts(shared_dir) -> Path:
    posts = shared_dir / "corpus" / "allforces" / "_posts"
    if not posts.is_dir():
        pytest.skip(f"shared corpus {posts} is absent")
    return posts


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    return PROJECT_ROOT / "corpus"


@pytest.fixture(scope="session")
def embedder():
    """The real default model (built offline by `rag model install`), loaded once per session."""
    from rag import parts
    from rag.settings import DEFAULT_MODEL_DIR, Settings

    model = PROJECT_ROOT / DEFAULT_MODEL_DIR
    if not (model / "model.safetensors").exists():
        pytest.fail(f"the default model is not built at {model}: run `make model` (make test does it)")
    return parts.embedder(Settings(model=str(model)))


SAMPLE_SITE = dict(site_url="https://example.com", permalink="/:year/:month/:day/:title/")


def build_sample_index(corpus: Path, index_dir: Path, embedder, **build):
    """Index `corpus` into a folder store with the default settings, through the same parts as `rag index`."""
    from rag import parts
    from rag.index import build_index
    from rag.settings import Settings

    settings = Settings(corpus=corpus, index=index_dir, **SAMPLE_SITE)
    store = parts.store(settings)
    loaded = parts.corpus(settings, None if build.get("rebuild") else parts.known_files(settings, store))
    return build_index(loaded, store, embedder, parts.chunker_config(settings),
                       parts.build_config(settings), source=parts.corpus_source(settings, loaded), **build)


@pytest.fixture(scope="session")
def sample_index(sample_corpus, embedder, tmp_path_factory):
    """The sample corpus indexed once per session with the real model: (index folder, build report)."""
    index_dir = tmp_path_factory.mktemp("idx") / "sample"
    return index_dir, build_sample_index(sample_corpus, index_dir, embedder)


@pytest.fixture(scope="session")
def engine(sample_index):
    from rag.engine import Engine
    from rag.settings import Settings

    engine = Engine(Settings(index=sample_index[0], model=str(PROJECT_ROOT / "models/multilingual-e5-small")))
    yield engine
    engine.close()


# ---------------------------------------------------------------- the HTTP service (tests/test_service.py, test_web.py)

ADMIN_KEY = "test-admin-key"


class LiveServer:
    """A real uvicorn server for `app` in a background thread, on a free port of 127.0.0.1. With `settings`, it is
    configured as `rag serve` configures it (the header deadline, the access log filter)."""

    def __init__(self, app, settings=None):
        import socket
        import threading

        import uvicorn

        from rag.service.config import service_config
        from rag.service.launcher import uvicorn_config

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        options = dict(log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        config = (uvicorn_config(app, service_config(settings), **options) if settings is not None
                  else uvicorn.Config(app, **options))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"uvicorn {self.url}")

    def __enter__(self) -> "LiveServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def service_settings(index: Path, **overrides):
    from rag.settings import Settings

    values = dict(index=index, model=str(PROJECT_ROOT / "models/multilingual-e5-small"), admin_api_key=ADMIN_KEY,
                  reload_poll_seconds=0, corpus=PROJECT_ROOT / "corpus")  # the sample blog: its images
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def live_service(sample_index, engine):
    """The service on the sample index, sharing the session's loaded engine; yields the LiveServer."""
    from rag.service import create_app

    settings = service_settings(sample_index[0])
    with LiveServer(create_app(settings, engine=engine), settings) as server:
        yield server


# ---------------------------------------------------------------- an OpenAI-compatible LLM (tests/test_llm.py, test_web.py)

LLM_API_KEY = "sk-test-5ecret-never-shown"


def llm_settings(index: Path, llm_url: str, **overrides):
    values = dict(llm_base_url=f"{llm_url}/v1", llm_model="grounded", llm_api_key=LLM_API_KEY, llm_timeout=1.5)
    values.update(overrides)
    return service_settings(index, **values)


@pytest.fixture(scope="session")
def fake_llm():
    """tests/openai_server.py on loopback: a protocol-faithful OpenAI server that wants LLM_API_KEY."""
    from tests.openai_server import create_fake_openai

    with LiveServer(create_fake_openai(api_key=LLM_API_KEY, slow_seconds=4)) as server:
        yield server


@pytest.fixture(scope="session")
def llm_service(sample_index, embedder, fake_llm):
    """The service with the `openai` generator configured against the fake LLM."""
    from rag.engine import Engine
    from rag.service import create_app

    settings = llm_settings(sample_index[0], fake_llm.url, llm_timeout=3)
    engine = Engine(settings, embedder)
    with LiveServer(create_app(settings, engine=engine)) as server:
        yield server
    engine.close()
