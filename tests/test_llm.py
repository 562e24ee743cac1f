"""The `openai` generator against a protocol-faithful OpenAI server on loopback (tests/openai_server.py).

Real retrieval over the sample corpus, a real uvicorn server for the fake LLM and for the service.
"""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from rag.engine import AskOptions, Engine
from rag.generators.openai import check_answer
from rag.types import NoticeCode
from tests.conftest import LLM_API_KEY as API_KEY
from tests.conftest import LiveServer, llm_settings, service_settings
from tests.openai_server import create_fake_openai

QUESTION = "富士山の標高は何メートル？"


@pytest.fixture(scope="module")
def make_engine(sample_index, embedder, fake_llm):
    engines = []

    def make(**overrides) -> Engine:
        engine = Engine(llm_settings(sample_index[0], fake_llm.url, **overrides), embedder)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def ask_llm(engine: Engine, question: str = QUESTION):
    return engine.ask(question, AskOptions(generator="openai"))


def assert_citations_are_verbatim(answer):
    for c in answer.citations:
        assert c.passage[c.quote_start : c.quote_end] == c.quote
        assert f"[{c.n}]" in answer.answer
    assert [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))


# ---------------------------------------------------------------- the citation check


@pytest.fixture(scope="module")
def hits(engine):
    return engine.retrieve(engine.analyse(QUESTION), 5).hits


def test_markers_out_of_range_are_removed_and_the_rest_renumbered(hits):
    draft = check_answer("富士山は静岡県と山梨県にまたがる。[2] 標高は3,776メートル。[1][7]", hits)
    assert draft.text == "富士山は静岡県と山梨県にまたがる。[1] 標高は3,776メートル。[2]"
    assert [q.hit for q in draft.quotes] == [1, 0]
    assert draft.repairs == ["removed [7]: there are 5 passages"]
    assert not draft.abstained


def test_full_width_and_listed_markers_are_understood(hits):
    draft = check_answer("標高は3,776メートルです［１］。山頂は静岡県側にある【1, 2】。", hits)
    assert draft.text == "標高は3,776メートルです[1]。山頂は静岡県側にある[1][2]。"
    assert [q.hit for q in draft.quotes] == [0, 1]


def test_each_cited_passage_is_quoted_by_the_sentence_closest_to_its_claim(hits):
    fuji = next(i for i, h in enumerate(hits) if "3,776" in h.chunk.text)
    draft = check_answer(f"富士山の標高は3,776メートルである[{fuji + 1}]。", hits)
    quote = draft.quotes[0]
    assert "3,776" in hits[fuji].chunk.text[quote.start : quote.end]


def test_an_answer_citing_nothing_or_saying_it_is_missing_abstains(hits):
    assert check_answer("富士山はとても高い山です。", hits).abstained
    assert check_answer("[1]。", hits).repairs == ["the answer is only markers"]
    assert check_answer("存在しない資料です。[8]", hits).abstained
    missing = check_answer("資料には富士山の標高は記載されていません。[1]", hits)
    assert missing.abstained and "do not contain" in missing.repairs[-1]


# ---------------------------------------------------------------- answers through the backend


def test_grounded_answer_cites_the_passages_it_used(make_engine, fake_llm):
    answer = ask_llm(make_engine())
    assert answer.generator == "openai" and not answer.abstained and answer.notice is None
    assert answer.notice_code is None
    assert answer.answer.startswith("資料によると")
    assert 1 <= len(answer.citations) <= 2
    assert_citations_are_verbatim(answer)
    sent = fake_llm.app.state.requests[-1]
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert sent["json"]["model"] == "grounded" and sent["json"]["temperature"] == 0.0
    system, user = sent["json"]["messages"]
    assert system["role"] == "system" and "[1]" in system["content"] and "見つかりませんでした" in system["content"]
    assert user["content"].startswith("資料:\n[1] 「") and f"\n質問: {QUESTION}\n" in user["content"]


def test_out_of_range_marker_is_dropped_from_the_answer(make_engine):
    answer = ask_llm(make_engine(llm_model="out-of-range", llm_context="passages"))
    assert answer.generator == "openai" and "[9]" not in answer.answer
    assert answer.repairs == ["removed [9]: there are 5 passages"]
    assert_citations_are_verbatim(answer)


def test_the_model_reads_the_best_sentences_with_their_neighbours(make_engine, fake_llm):
    whole = ask_llm(make_engine(llm_context="passages"))
    whole_prompt = fake_llm.app.state.requests[-1]["json"]["messages"][1]["content"]
    answer = ask_llm(make_engine())  # RAG_LLM_CONTEXT=excerpts, the default
    prompt = fake_llm.app.state.requests[-1]["json"]["messages"][1]["content"]
    assert "3,776" in prompt and len(prompt) < len(whole_prompt)
    assert not answer.abstained and answer.citations and answer.citations[0].article_id == whole.citations[0].article_id
    assert_citations_are_verbatim(answer)  # quoted from the whole passage, not the excerpt


@pytest.mark.parametrize("model", ["no-cite", "missing"])
def test_uncited_or_missing_answers_abstain(make_engine, model):
    answer = ask_llm(make_engine(llm_model=model))
    assert answer.abstained and answer.generator == "openai" and answer.citations == []


@pytest.mark.parametrize("model, notice", [
    ("slow", "llm fallback: no answer within 1.5 s"),
    ("malformed", "llm fallback: malformed response"),
    ("error", "llm fallback: HTTP 500: the model crashed"),
])
def test_backend_faults_fall_back_to_the_extractive_answer(make_engine, model, notice):
    answer = ask_llm(make_engine(llm_model=model))
    assert answer.generator == "extractive" and answer.notice.startswith(notice)
    assert answer.notice_code == NoticeCode.LLM_FALLBACK
    assert not answer.abstained and "3,776" in answer.answer


def test_backend_down_falls_back(sample_index, embedder):
    with LiveServer(create_fake_openai()) as gone:
        url = gone.url
    engine = Engine(service_settings(sample_index[0], llm_base_url=f"{url}/v1"), embedder)
    try:
        answer = ask_llm(engine)
        assert answer.generator == "extractive" and answer.notice.startswith("llm fallback: cannot reach")
        assert answer.notice_code == NoticeCode.LLM_FALLBACK
        assert engine.generator_health()["openai"]["reachable"] is False
    finally:
        engine.close()


def test_an_incident_is_logged_once_and_never_with_the_key(make_engine, caplog):
    engine = make_engine(llm_api_key="sk-wrong-key-0000")
    with caplog.at_level(logging.INFO, logger="rag.generators.openai"):
        first, second = ask_llm(engine), ask_llm(engine)
    assert first.notice == second.notice == "llm fallback: HTTP 401: Incorrect API key provided"
    assert first.notice_code == second.notice_code == NoticeCode.LLM_FALLBACK
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 401" in warnings[0].getMessage()
    for secret in ("sk-wrong-key-0000", API_KEY):
        assert secret not in caplog.text
        assert secret not in json.dumps(first.__dict__, default=str, ensure_ascii=False)
        assert secret not in repr(engine.settings)


def test_recovery_ends_the_incident(make_engine, caplog):
    engine = make_engine(llm_model="error")
    generator = engine.generator("openai")
    with caplog.at_level(logging.INFO, logger="rag.generators.openai"):
        ask_llm(engine)
        generator.config = type(generator.config)(**{**generator.config.__dict__, "model": "grounded"})
        assert ask_llm(engine).generator == "openai"
        generator.config = type(generator.config)(**{**generator.config.__dict__, "model": "error"})
        ask_llm(engine)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "answering extractively" in m]) == 2
    assert len([m for m in messages if "answering again" in m]) == 1


def test_unconfigured_backend_is_a_clear_422_and_not_offered(engine):
    from rag.errors import UnknownGenerator

    assert engine.configured_generators() == ["extractive"]
    with pytest.raises(UnknownGenerator, match="'openai' is not configured: set RAG_LLM_BASE_URL"):
        engine.ask(QUESTION, AskOptions(generator="openai"))


def test_prompt_template_can_be_overridden(make_engine, fake_llm, tmp_path):
    template = tmp_path / "short.j2"
    template.write_text("{% block system %}資料だけで答えて。{% endblock %}{% block user %}{{ question }}"
                        "{% for p in passages %}\n[{{ p.n }}] {{ p.text }}{% endfor %}{% endblock %}", encoding="utf-8")
    ask_llm(make_engine(llm_prompt=template))
    system, user = fake_llm.app.state.requests[-1]["json"]["messages"]
    assert system["content"] == "資料だけで答えて。" and user["content"].startswith(QUESTION + "\n[1] ")
    broken = tmp_path / "broken.j2"
    broken.write_text("{% block system %}only a system block{% endblock %}", encoding="utf-8")
    from rag.errors import UnknownGenerator

    with pytest.raises(UnknownGenerator, match="lacks the block\\(s\\) user"):
        make_engine(llm_prompt=broken).generator("openai")


# ---------------------------------------------------------------- through the HTTP service


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_tokens_stream_through_sse_after_the_passages(llm_service):
    response = httpx.post(f"{llm_service.url}/ask", json={"question": QUESTION, "generator": "openai"},
                          headers={"Accept": "text/event-stream"}, timeout=30)
    events = read_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "citations" and kinds[-1] == "done" and set(kinds[1:-1]) == {"delta"}
    offered = events[0][1]["citations"]
    assert [c["n"] for c in offered] == [1, 2, 3, 4, 5]
    streamed = "".join(data["text"] for kind, data in events if kind == "delta")
    assert len(kinds) - 2 > 3  # token pieces, not one sentence per event
    done = events[-1][1]
    assert done["generator"] == "openai" and streamed.startswith("資料によると")
    assert done["citations"] and all(c["quote"] in c["passage"] for c in done["citations"])
    assert API_KEY not in response.text


def test_a_failing_stream_ends_with_the_extractive_answer(sample_index, embedder, fake_llm):
    from rag.service import create_app

    settings = llm_settings(sample_index[0], fake_llm.url, llm_model="malformed")
    engine = Engine(settings, embedder)
    with LiveServer(create_app(settings, engine=engine)) as server:
        response = httpx.post(f"{server.url}/ask", json={"question": QUESTION, "generator": "openai"},
                              headers={"Accept": "text/event-stream"}, timeout=30)
        plain = httpx.post(f"{server.url}/ask", json={"question": QUESTION, "generator": "openai"}, timeout=30)
    engine.close()
    done = read_events(response)[-1]
    assert response.status_code == 200 and done[0] == "done"
    assert done[1]["generator"] == "extractive" and done[1]["notice"] == "llm fallback: malformed stream chunk"
    assert done[1]["notice_code"] == "llm_fallback"
    assert plain.status_code == 200 and plain.json()["generator"] == "extractive"


def test_readyz_and_facets_report_the_configured_generators(llm_service):
    ready = httpx.get(f"{llm_service.url}/readyz").json()
    assert ready["generators"]["extractive"] == {"reachable": True}
    assert ready["generators"]["openai"] == {"reachable": True, "model": "grounded"}
    assert httpx.get(f"{llm_service.url}/api/facets").json()["generators"] == ["extractive", "openai"]
    assert API_KEY not in json.dumps(ready)


def test_the_default_service_refuses_an_unconfigured_generator(live_service):
    response = httpx.post(f"{live_service.url}/ask", json={"question": QUESTION, "generator": "openai"})
    assert response.status_code == 422
    assert "not configured" in response.json()["error"]
