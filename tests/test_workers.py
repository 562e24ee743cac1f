"""`rag serve --workers 2` as a real subprocess: every worker process gets the same settings as the parent,
secrets included (a masked LLM key would make every worker fall back to the extractive answer)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import httpx
import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.service.launcher import export_env
from tests.conftest import LLM_API_KEY, PROJECT_ROOT

RAG = PROJECT_ROOT / ".venv" / "bin" / "rag"
READY_TIMEOUT_S = 180  # each worker loads the model on its own
ASKS = 8


class Limits(BaseModel):
    token: SecretStr
    sizes: list[int]


class ExampleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_", extra="allow")

    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout: float = 60.0
    limits: Limits | None = None


def test_export_env_writes_what_the_settings_read_back(monkeypatch):
    for name in ("EXAMPLE_API_KEY", "EXAMPLE_TIMEOUT", "EXAMPLE_LIMITS", "EXAMPLE_LLM_API_KEY"):
        monkeypatch.setenv(name, "")  # records the variable's state, so export_env's writes are undone
        monkeypatch.delenv(name)
    monkeypatch.setenv("EXAMPLE_BASE_URL", "http://stale")
    settings = ExampleSettings(api_key="sk-real", base_url=None, timeout=2.5,
                               limits=Limits(token="t0k", sizes=[1, 2]), llm_api_key=SecretStr("sk-extra"))
    export_env(settings)
    assert os.environ["EXAMPLE_API_KEY"] == "sk-real" and "EXAMPLE_BASE_URL" not in os.environ
    assert os.environ["EXAMPLE_LLM_API_KEY"] == "sk-extra"  # a keyword argument no field declares
    again = ExampleSettings()
    assert again.api_key.get_secret_value() == "sk-real" and again.timeout == 2.5
    assert again.limits.token.get_secret_value() == "t0k" and again.limits.sizes == [1, 2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def until_served(send, process: subprocess.Popen, deadline: float) -> httpx.Response:
    """`send()`'s response once it is not a 503: a worker that is still loading answers 503."""
    while time.monotonic() < deadline:
        assert process.poll() is None, f"rag serve exited with {process.returncode}"
        try:
            response = send()
            if response.status_code != 503:
                return response
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"no answer but 503 within {READY_TIMEOUT_S} s")


@pytest.fixture()
def two_workers(sample_index, fake_llm, tmp_path):
    """`rag serve --workers 2` on a free port with the LLM key in the environment; yields (url, process)."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAG_")}
    env.update(RAG_LLM_BASE_URL=f"{fake_llm.url}/v1", RAG_LLM_API_KEY=LLM_API_KEY,
               RAG_MODEL=str(PROJECT_ROOT / "models/multilingual-e5-small"), RAG_RELOAD_POLL_SECONDS="0")
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(RAG), "serve", "--workers", "2", "--port", str(port), "--index", str(sample_index[0])],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()  # uvicorn's supervisor stops its workers on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        print(log_path.read_text())  # pytest shows it when the test fails


@pytest.mark.slow
def test_every_worker_sends_the_real_llm_key(two_workers):
    url, process = two_workers
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert until_served(lambda: httpx.get(f"{url}/readyz", timeout=5), process, deadline).status_code == 200
    body = {"question": "富士山の標高は？", "generator": "openai"}
    # a new connection each: the kernel spreads them over both workers' accept queues
    answers = [until_served(lambda: httpx.post(f"{url}/ask", json=body, timeout=60), process, deadline).json()
               for _ in range(ASKS)]
    assert [(a["generator"], a.get("notice_code"), a["notice"]) for a in answers] == [("openai", None, None)] * ASKS
