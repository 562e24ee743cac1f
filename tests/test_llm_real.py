"""The `openai` generator against a real model server: llama-cpp-python serving Qwen2.5-Coder-1.5B-Instruct.

`make test-llm` builds the server and the model under .llm/ and runs these; the default suite skips them
(one answer takes 20-30 s on 2 cores). Small models cite loosely, so these assert the protocol and the
checks, not the wording: every kept marker points to a cited passage and every quote is verbatim.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from rag.engine import AskOptions, Engine
from tests.conftest import LiveServer, service_settings

pytestmark = [pytest.mark.llm, pytest.mark.skipif(os.environ.get("RAG_TEST_LLM") != "1",
                                                  reason="needs the real local LLM: run `make test-llm`")]
QUESTION = "東京スカイツリーの高さは何メートル？"


@pytest.fixture(scope="module")
def real_llm():
    from bench.local_llm import running_server

    with running_server() as url:
        yield url


@pytest.fixture(scope="module")
def real_llm_engine(sample_index, embedder, real_llm):
    from bench.local_llm import MODEL_ALIAS

    settings = service_settings(sample_index[0], llm_base_url=real_llm, llm_model=MODEL_ALIAS, llm_timeout=240)
    engine = Engine(settings, embedder)
    yield engine
    engine.close()


def test_a_real_model_answers_with_checked_citations(real_llm_engine):
    answer = real_llm_engine.ask(QUESTION, AskOptions(generator="openai"))
    assert answer.generator == "openai" and answer.notice is None, answer.notice
    if not answer.abstained:
        assert answer.citations
        for c in answer.citations:
            assert f"[{c.n}]" in answer.answer and c.passage[c.quote_start : c.quote_end] == c.quote
    assert real_llm_engine.generator_health()["openai"]["reachable"] is True


def test_a_real_model_streams_tokens_through_the_service(real_llm_engine):
    from rag.service import create_app

    with LiveServer(create_app(real_llm_engine.settings, engine=real_llm_engine)) as server:
        response = httpx.post(f"{server.url}/ask", json={"question": QUESTION, "generator": "openai"},
                              headers={"Accept": "text/event-stream"}, timeout=300)
    events = [(b.split("\n", 1)[0].removeprefix("event: "), json.loads(b.split("data: ", 1)[1]))
              for b in response.text.strip().split("\n\n")]
    kinds = [k for k, _ in events]
    assert kinds[0] == "citations" and kinds[-1] == "done" and kinds.count("delta") >= 5
    assert events[-1][1]["generator"] == "openai"
