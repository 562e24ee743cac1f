"""Fuzzing POST /ask on the real service: random JSON, strings with lone surrogates and control characters,
huge numbers, raw bytes. The service never answers 500, always answers in time, and every error has the one
JSON shape. Derandomised (the same examples each run), so CI cannot flake on a new one."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.test_service import read_events

# Every code point, lone surrogates (category Cs) and control characters included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
QUESTIONS = st.one_of(ANY_TEXT, st.sampled_from(["富士山の標高は？", "東京スカイツリーの高さは？", " \u3000", "AI\ud800です"]))
NUMBERS = st.one_of(st.integers(), st.integers(min_value=-10**400, max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, ANY_TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(ANY_TEXT, inner, max_size=4)), max_leaves=12)
# Mostly well-typed fields, so that most bodies get past validation to the engine with their odd text.
FIELDS = st.fixed_dictionaries({"question": st.one_of(QUESTIONS, QUESTIONS, JSON)}, optional={
    "k": st.one_of(st.integers(min_value=1, max_value=20), NUMBERS, JSON),
    "filters": st.one_of(st.fixed_dictionaries({}, optional={
        "category": st.one_of(ANY_TEXT, JSON), "tag": ANY_TEXT,
        "date_from": st.one_of(st.dates().map(str), ANY_TEXT), "date_to": st.one_of(st.dates().map(str), JSON)}),
        JSON),
    "history": st.one_of(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]),
                                                         "content": st.one_of(ANY_TEXT, JSON)}), max_size=3), JSON),
    "generator": st.one_of(st.just("extractive"), ANY_TEXT),
})
BODIES = st.one_of(
    FIELDS, FIELDS,
    FIELDS.flatmap(lambda body: st.dictionaries(ANY_TEXT, JSON, max_size=2).map(lambda extra: {**extra, **body})),
    JSON)


def encoded(body, ascii_only: bool) -> bytes:
    """The body as JSON text: escaped (`\\ud800`), or raw, where a lone surrogate becomes invalid UTF-8."""
    return json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def client(live_service):
    with httpx.Client(base_url=live_service.url, timeout=30) as client:  # a hang fails as a timeout
        yield client


def check(response: httpx.Response) -> None:
    assert response.status_code != 500 and response.status_code < 600, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json"
        error = response.json()
        assert set(error) == {"error", "status"} and error["status"] == response.status_code
        assert isinstance(error["error"], str) and error["error"]
    elif response.headers["content-type"].startswith("text/event-stream"):
        name, data = read_events(response)[-1]
        assert name == "done" or (name == "error" and data["status"] != 500), data
    else:
        assert response.json()["question"]


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=BODIES, ascii_only=st.booleans(), stream=st.booleans())
@example(body={"question": "AI\ud800です"}, ascii_only=True, stream=False)  # the probes of issue 16
@example(body={"question": "AI\ud800です"}, ascii_only=True, stream=True)
@example(body={"question": "それは？", "history": [{"role": "user", "content": "\udcff"}]}, ascii_only=True,
         stream=False)
@example(body={"question": "富士山の標高は？", "k": 10**400}, ascii_only=True, stream=False)
def test_ask_never_answers_500(client, body, ascii_only, stream):
    headers = {"Content-Type": "application/json", **({"Accept": "text/event-stream"} if stream else {})}
    check(client.post("/ask", content=encoded(body, ascii_only), headers=headers))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_ask_never_answers_500_to_raw_bytes(client, raw, content_type):
    check(client.post("/ask", content=raw, headers={"Content-Type": content_type} if content_type else {}))
