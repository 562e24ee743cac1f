"""The HTTP service, through a real uvicorn server on 127.0.0.1 and httpx: JSON and SSE answers, health,
readiness, the one error shape, admin reload (also under concurrent load), the query log and feedback, article
pages, OpenAPI."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import threading
import time

import httpx
import pytest

from rag.errors import InvalidSetting, RagError
from rag.generators import register, unregister
from rag.index.folder import CURRENT
from rag.answer import marker_pieces
from rag.service import create_app
from tests.conftest import ADMIN_KEY, PROJECT_ROOT, LiveServer, service_settings

ANSWER_FIELDS = {"question", "answer", "abstained", "generator", "citations", "related", "timings_ms", "notice",
                 "notice_code", "repairs", "short_answer", "answer_id"}
CITATION_FIELDS = {"n", "article_id", "title", "date", "url", "categories", "passage", "quote", "quote_start",
                   "quote_end", "score", "also_in", "image"}
RELATED_FIELDS = {"article_id", "title", "date", "url"}
SSE = {"Accept": "text/event-stream"}


@pytest.fixture()
def client(live_service):
    with httpx.Client(base_url=live_service.url, timeout=60) as client:
        yield client


def read_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a Server-Sent-Events response."""
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------- answers


def test_ask_returns_the_answer_object(client):
    response = client.post("/ask", json={"question": "東京スカイツリーの高さは？"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    answer = response.json()
    assert set(answer) == ANSWER_FIELDS
    assert answer["question"] == "東京スカイツリーの高さは？" and not answer["abstained"]
    assert "634メートル" in answer["answer"] and answer["generator"] == "extractive"
    assert answer["citations"] and all(set(c) == CITATION_FIELDS for c in answer["citations"])
    assert all(set(r) == RELATED_FIELDS for r in answer["related"])
    assert answer["citations"][0]["article_id"] == "2025-07-18-tokyo-skytree"
    assert set(answer["timings_ms"]) == {"embed", "search", "compose", "total"}


def test_ask_options_k_filters_history_generator(client):
    answer = client.post("/ask", json={
        "question": "日本の歴史について教えて", "k": 3, "generator": "extractive",
        "filters": {"category": "文化", "date_from": "2025-01-01", "date_to": "2025-12-31"}}).json()
    articles = [c["article_id"] for c in answer["citations"]] + [r["article_id"] for r in answer["related"]]
    assert articles and all(a in {"2025-08-25-washoku-unesco", "2025-09-12-shogi-rules", "2025-10-14-haiku-basics",
                                  "2025-11-05-nihoncha"} for a in articles)
    follow_up = client.post("/ask", json={"question": "それはいつ開業した？", "history": [
        {"role": "user", "content": "東京スカイツリーについて教えて"},
        {"role": "assistant", "content": "東京スカイツリーは、東京都墨田区押上にある電波塔です。[1]",
         "articles": ["2025-07-18-tokyo-skytree"]}]}).json()
    assert follow_up["citations"][0]["article_id"] == "2025-07-18-tokyo-skytree"
    assert "2012年5月22日" in follow_up["answer"]
    on_page = client.post("/ask", json={"question": "それはいつ開業した？", "article": "2025-07-18-tokyo-skytree"}).json()
    assert on_page["citations"][0]["article_id"] == "2025-07-18-tokyo-skytree"  # the post the reader is on
    nothing = client.post("/ask", json={"question": "富士山の標高は？", "filters": {"category": "存在しないカテゴリ"}}).json()
    assert nothing["abstained"] and nothing["notice"] == "no article matches the filters"
    assert nothing["notice_code"] == "no_article_matches_filters"


def test_ask_streams_citations_then_deltas_then_done(client):
    response = client.post("/ask", json={"question": "東京スカイツリーの高さは？"}, headers=SSE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = read_events(response)
    names = [name for name, _ in events]
    assert names[0] == "citations" and names[-1] == "done"
    assert names[1:-1] and set(names[1:-1]) == {"delta"}
    first, done = events[0][1], events[-1][1]
    assert set(first) == {"citations", "related"}
    assert set(done) == ANSWER_FIELDS and first["citations"] == done["citations"]
    pieces = [data["text"] for name, data in events if name == "delta"]
    assert "".join(pieces) == done["answer"]
    assert len(pieces) == len(done["citations"])  # one sentence with its marker per delta
    assert all(re.search(r"\[\d+\]$", piece) for piece in pieces)


def test_streamed_abstention_is_one_delta(client):
    body = {"question": "富士山の標高は？", "filters": {"date_from": "2030-01-01"}}  # no article that late
    events = read_events(client.post("/ask", json=body, headers=SSE))
    assert [name for name, _ in events] == ["citations", "delta", "done"]
    assert events[0][1] == {"citations": [], "related": []}
    done = events[-1][1]
    assert done["abstained"] and done["notice"] == "no article matches the filters"
    assert done["notice_code"] == "no_article_matches_filters"
    assert events[1][1]["text"] == done["answer"] == "記事の中に、この質問に答える情報は見つかりませんでした。"


def test_marker_pieces_split_after_each_marker():
    assert list(marker_pieces("一文目。[1]二文目。[2]")) == ["一文目。[1]", "二文目。[2]"]
    assert list(marker_pieces("見つかりませんでした。")) == ["見つかりませんでした。"]
    assert list(marker_pieces("a[1][2] b")) == ["a[1]", "[2]", " b"]


def test_facets_list_categories_and_date_range(client):
    facets = client.get("/api/facets").json()
    assert {"科学技術", "文化", "自然と地理", "交通"} <= set(facets["categories"])
    assert facets["categories"] == sorted(facets["categories"])
    assert (facets["date_from"], facets["date_to"]) == ("2025-01-15", "2026-03-10")
    assert "extractive" in facets["generators"]
    newest = facets["newest"]  # the latest articles first, with their site-time dates
    assert len(newest) == 3 and newest[0]["date"] == "2026-03-10" and [a["date"] for a in newest] == sorted(
        (a["date"] for a in newest), reverse=True) and all(a["title"] and a["article_id"] for a in newest)


# ---------------------------------------------------------------- health


def test_healthz_and_readyz(client, sample_index):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["index"] == str(sample_index[0])
    assert body["generation"] == (sample_index[0] / CURRENT).read_text().strip()
    assert body["model"].startswith("multilingual-e5-small@")
    assert body["counts"]["articles"] == 15 and body["created_at"] and body["generators"] == {"extractive": {"reachable": True}}


# ---------------------------------------------------------------- bad input: one JSON shape, clear messages

BAD_REQUESTS = [
    ("empty question", {"question": ""}, 422, "the question is empty"),
    ("whitespace question", {"question": " \u3000\n "}, 422, "the question is empty"),
    ("question over 1000 chars", {"question": "あ" * 1001}, 422, "the limit is 1000"),
    ("k zero", {"question": "富士山の標高は？", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ("k 21", {"question": "富士山の標高は？", "k": 21}, 422, "k: Input should be less than or equal to 20"),
    ("k as text", {"question": "富士山の標高は？", "k": "five"}, 422, "k: Input should be a valid integer"),
    ("k as numeric text", {"question": "富士山の標高は？", "k": "5"}, 422, "k: Input should be a valid integer"),
    ("k as bool", {"question": "富士山の標高は？", "k": True}, 422, "k: Input should be a valid integer"),
    ("question as number", {"question": 5}, 422, "question: Input should be a valid string"),
    ("missing question", {"k": 5}, 422, "question: field required"),
    ("unknown field", {"question": "富士山の標高は？", "top_k": 5}, 422, "top_k: unknown field"),
    ("unknown filter", {"question": "富士山の標高は？", "filters": {"author": "x"}}, 422, "filters.author: unknown field"),
    ("bad date", {"question": "富士山の標高は？", "filters": {"date_from": "2025-13-01"}}, 422,
     "filters.date_from: '2025-13-01' is not an ISO date (YYYY-MM-DD)"),
    ("date not ISO", {"question": "富士山の標高は？", "filters": {"date_to": "2025/01/01"}}, 422,
     "filters.date_to: '2025/01/01' is not an ISO date"),
    ("date as number", {"question": "富士山の標高は？", "filters": {"date_to": 20250101}}, 422,
     "filters.date_to: 20250101 is not an ISO date"),
    ("bad history role", {"question": "それは？", "history": [{"role": "system", "content": "x"}]}, 422,
     "history.0.role: Input should be 'user' or 'assistant'"),
    ("bad cited articles", {"question": "それは？", "history": [{"role": "assistant", "content": "x", "articles": "a"}]},
     422, "history.0.articles: Input should be a valid list"),
    ("unknown generator", {"question": "富士山の標高は？", "generator": "gpt"}, 422,
     "unknown generator 'gpt'; available: extractive"),
    ("body not an object", ["富士山の標高は？"], 422, "the request body must be a JSON object"),
    ("lone surrogate in the question", {"question": "AI\ud800です"}, 422,
     "question: not valid Unicode: lone surrogate U+D800 at character 3"),
    ("lone low surrogate", {"question": "\udcff"}, 422, "question: not valid Unicode: lone surrogate U+DCFF"),
    ("lone surrogate in history", {"question": "それは？", "history": [{"role": "user", "content": "x\udfff"}]},
     422, "history.0.content: not valid Unicode"),
    ("lone surrogate in a filter", {"question": "富士山の標高は？", "filters": {"category": "\ud800"}}, 422,
     "filters.category: not valid Unicode"),
    ("lone surrogate in the generator", {"question": "富士山の標高は？", "generator": "\ud83d"}, 422,
     "generator: not valid Unicode"),
    ("lone surrogate in a field name", {"question": "富士山の標高は？", "\ud800": 1}, 422,
     "a field name: not valid Unicode"),
]


@pytest.mark.parametrize("body, status, message", [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
@pytest.mark.parametrize("accept", ["json", "sse"])
def test_bad_input_is_a_clear_json_error(client, body, status, message, accept):
    # sent as json.dumps writes it: lone surrogates as \u escapes (httpx's json= could not encode them)
    headers = {"Content-Type": "application/json", **(SSE if accept == "sse" else {})}
    response = client.post("/ask", content=json.dumps(body), headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": response.json()["error"], "status": status}
    assert message in response.json()["error"]


@pytest.mark.parametrize("content, headers, status, message", [
    ('{"question": "富士山'.encode(), {"Content-Type": "application/json"}, 400, "malformed JSON"),
    (b"", {"Content-Type": "application/json"}, 422, "the request body is missing"),
    ("富士山の標高は？".encode(), {"Content-Type": "text/plain"}, 422, "must be a JSON object"),
    (b'{"question": "' + "富士山".encode("shift_jis") + b'"}', {"Content-Type": "application/json"}, 400,
     "error parsing the body"),  # invalid UTF-8
    (b'{"question": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", {"Content-Type": "application/json"}, 400,
     "error parsing the body"),  # nested deeper than the parser's recursion
])
def test_malformed_bodies(client, content, headers, status, message):
    response = client.post("/ask", content=content, headers=headers)
    assert response.status_code == status and response.json()["status"] == status
    assert message in response.json()["error"]


def test_body_over_64_kib_is_413_by_header_and_by_size(client):
    big = json.dumps({"question": "富士山の標高は？", "history": [{"role": "user", "content": "x" * 9000}] * 8}).encode()
    assert len(big) > 64 * 1024
    by_header = client.post("/ask", content=big, headers={"Content-Type": "application/json"})
    assert by_header.status_code == 413
    assert by_header.json() == {"error": "the request body is over 65536 bytes", "status": 413}
    # chunked: no Content-Length, so the bytes received are counted
    by_size = client.post("/ask", content=iter([big[:40_000], big[40_000:]]),
                          headers={"Content-Type": "application/json"})
    assert "content-length" not in by_size.request.headers
    assert by_size.status_code == 413 and by_size.json()["status"] == 413
    just_under = json.dumps({"question": "富士山の標高は？", "history": [{"role": "user", "content": "x" * 9000}] * 6})
    assert client.post("/ask", content=just_under, headers={"Content-Type": "application/json"}).status_code == 200


def test_other_http_errors_have_the_same_shape(client):
    assert client.get("/nowhere").json() == {"error": "Not Found", "status": 404}
    assert client.get("/ask").json() == {"error": "Method Not Allowed", "status": 405}


class BrokenGenerator:
    """A generator plugin (registered through rag.generators.register) that fails while answering."""

    name = "broken"

    def __init__(self, deps):
        pass

    def generate(self, evidence):
        if "開業" in evidence.question.text:
            raise ZeroDivisionError("secret internal detail")
        raise RagError("the generator failed")


@pytest.fixture()
def broken_generator():
    register("broken")(BrokenGenerator)
    yield "broken"
    unregister("broken")


def test_failures_while_answering(client, broken_generator):
    body = {"question": "東京スカイツリーの高さは？", "generator": broken_generator}
    as_json = client.post("/ask", json=body)
    assert as_json.status_code == 400 and as_json.json() == {"error": "the generator failed", "status": 400}
    streamed = read_events(client.post("/ask", json=body, headers=SSE))
    assert streamed == [("error", {"error": "the generator failed", "status": 400})]
    internal = {"question": "東京スカイツリーが開業したのはいつ？", "generator": broken_generator}
    crash = client.post("/ask", json=internal)  # the catch-all: 500 JSON, no traceback, no detail
    assert crash.status_code == 500 and crash.json() == {"error": "internal server error", "status": 500}
    crash_streamed = read_events(client.post("/ask", json=internal, headers=SSE))
    assert crash_streamed == [("error", {"error": "internal server error", "status": 500})]


# ---------------------------------------------------------------- admin reload


def test_admin_reload_needs_the_key(client):
    missing = client.post("/admin/reload")
    wrong = client.post("/admin/reload", headers={"X-API-Key": "wrong"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json() == {"error": "missing or wrong X-API-Key header", "status": 401}
    ok = client.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert ok.status_code == 200 and ok.json()["status"] == "reloaded"
    assert ok.json()["generation"] == ok.json()["previous"] == client.get("/readyz").json()["generation"]


def test_admin_reload_is_disabled_without_a_configured_key(sample_index, engine):
    app = create_app(service_settings(sample_index[0], admin_api_key=None), engine=engine)
    with LiveServer(app) as server:
        response = httpx.post(f"{server.url}/admin/reload", headers={"X-API-Key": ""})
    assert response.status_code == 403 and "RAG_ADMIN_API_KEY" in response.json()["error"]


@pytest.mark.slow
def test_no_request_fails_while_reloading(live_service, engine):
    questions = ["東京スカイツリーの高さは？", "富士山の標高は？", "将棋盤のマスの数は？", "琵琶湖の面積は？"]
    failures: list[str] = []
    done = 0
    lock = threading.Lock()

    def worker(i: int) -> None:
        nonlocal done
        with httpx.Client(base_url=live_service.url, timeout=60) as client:
            for j in range(20):
                question = questions[(i + j) % len(questions)]
                try:
                    if j % 2:
                        events = read_events(client.post("/ask", json={"question": question}, headers=SSE))
                        ok = [e for e, _ in events][-1] == "done" and events[-1][1]["citations"]
                    else:
                        response = client.post("/ask", json={"question": question})
                        ok = response.status_code == 200 and response.json()["citations"]
                    if not ok:
                        failures.append(f"{question}: bad answer")
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"{question}: {exc!r}")
                with lock:
                    done += 1

    holder = live_service.app.state.holder
    reloads_before = holder.reloads
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    retired = []
    with httpx.Client(base_url=live_service.url, timeout=60) as admin:
        wait_for(lambda: done > 0)  # answers are flowing (a slow machine takes a while for the first ones)
        for _ in range(5):
            time.sleep(0.3)
            retired.append(holder.engine)
            assert admin.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
            assert 0 < done < 160  # the swaps happen under load
    for thread in threads:
        thread.join()
    assert failures == [] and done == 160
    assert holder.reloads == reloads_before + 5
    # every engine the service built and then replaced was closed once its requests were done
    owned = [e for e in retired if e is not engine]
    assert len(owned) >= 4 and holder.engine not in retired
    for old in owned:
        with pytest.raises(sqlite3.ProgrammingError):
            old.store.db.execute("SELECT 1")
    assert engine.store.db.execute("SELECT 1").fetchone()[0] == 1  # the session's engine is not ours to close


def test_not_ready_until_the_index_exists_then_admin_reload(sample_index, tmp_path):
    """No embedder handed over: the model loads in the background while /healthz answers; with no index
    there yet, /readyz and /ask stay 503 until the index is copied in and /admin/reload opens it."""
    index = tmp_path / "later"
    app = create_app(service_settings(index))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        started = time.monotonic()
        assert client.get("/healthz").json() == {"status": "ok"}
        first = client.get("/readyz")
        assert time.monotonic() - started < 5  # answered while the model loads (bounded loosely: CI shares its cores)
        assert first.status_code == 503 and first.json()["state"] == "loading"
        assert first.json()["status"] == 503 and "loading" in first.json()["error"]
        failed = wait_for(lambda: (r := client.get("/readyz")).json()["state"] == "failed" and r)
        assert failed.status_code == 503 and f"no index at {index}" in failed.json()["error"]
        ask = client.post("/ask", json={"question": "富士山の標高は？"})
        assert ask.status_code == 503 and ask.json() == {"error": failed.json()["error"], "status": 503}
        assert client.get("/api/facets").status_code == 503
        assert client.get("/articles/2025-01-15-fujisan").status_code == 503

        shutil.copytree(sample_index[0], index)
        reloaded = client.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
        assert reloaded.status_code == 200 and reloaded.json()["previous"] is None
        assert client.get("/readyz").json()["status"] == "ready"
        assert "3,776メートル" in client.post("/ask", json={"question": "富士山の標高は？"}).json()["answer"]


def test_poller_loads_and_swaps_new_generations(sample_index, engine, tmp_path):
    index = tmp_path / "polled"
    app = create_app(service_settings(index, reload_poll_seconds=0.1), embedder=engine.embedder)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert wait_for(lambda: client.get("/readyz").json()["state"] == "failed")
        shutil.copytree(sample_index[0], index)
        ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r.json())
        old = ready["generation"]
        # a "new build": another generation folder, then CURRENT replaced atomically
        new = "gen-29991231T000000000000Z"
        shutil.copytree(index / old, index / new)
        (index / ".CURRENT.tmp").write_text(new + "\n")
        (index / ".CURRENT.tmp").replace(index / CURRENT)
        swapped = wait_for(lambda: (r := client.get("/readyz").json())["generation"] == new and r)
        assert swapped["reloads"] == 1
        assert client.post("/ask", json={"question": "将棋盤のマスの数は？"}).status_code == 200


# ---------------------------------------------------------------- the query log: feedback and the owner's report


def logged(server, answer_id: str) -> dict:
    """The query log's row for `answer_id`, once the service has written it (just after the answer was sent)."""
    path = server.app.state.answers.config.path

    def row():
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            found = db.execute("SELECT * FROM questions WHERE answer_id = ?", (answer_id,)).fetchone()
        return dict(found) if found else None

    return wait_for(row, timeout=5)


def test_every_answer_is_logged_with_an_id_for_feedback(client, live_service):
    answer = client.post("/ask", json={"question": "東京スカイツリーの高さは？"}).json()
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", answer["answer_id"])
    row = logged(live_service, answer["answer_id"])
    assert row["question"] == "東京スカイツリーの高さは？" and row["answer"] == answer["answer"]
    assert row["abstained"] == 0 and row["generator"] == "extractive" and row["history_turns"] == 0
    assert json.loads(row["cited"]) == list(dict.fromkeys(c["article_id"] for c in answer["citations"]))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row["asked_at"])

    body = {"question": "それはいつ開業した？", "filters": {"date_from": "2030-01-01"},
            "history": [{"role": "user", "content": "東京スカイツリーについて教えて"}]}
    done = read_events(client.post("/ask", json=body, headers=SSE))[-1][1]
    streamed = logged(live_service, done["answer_id"])
    assert streamed["abstained"] == 1 and streamed["history_turns"] == 1
    assert streamed["notice_code"] == "no_article_matches_filters" and json.loads(streamed["cited"]) == []

    stored = client.post("/feedback", json={"answer_id": answer["answer_id"], "rating": "down", "comment": "高さより開業日が知りたかった"})
    assert stored.status_code == 200 and stored.json() == {"status": "stored", "answer_id": answer["answer_id"],
                                                           "rating": "down"}
    with sqlite3.connect(live_service.app.state.answers.config.path) as db:
        assert db.execute("SELECT rating, comment FROM feedback WHERE answer_id = ?", (answer["answer_id"],)).fetchone() \
            == ("down", "高さより開業日が知りたかった")


@pytest.mark.parametrize("body, status, message", [
    ({"answer_id": "AAAAAAAAAAAAAAAA", "rating": "up"}, 404, "no answer with id 'AAAAAAAAAAAAAAAA'"),
    ({"answer_id": "x", "rating": "meh"}, 422, "rating: Input should be 'up' or 'down'"),
    ({"answer_id": "x", "rating": "up", "comment": "あ" * 1001}, 422, "comment: String should have at most 1000"),
    ({"answer_id": "../x", "rating": "up"}, 422, "answer_id: String should match pattern"),
    ({"answer_id": "x", "rating": "up", "ip": "1.2.3.4"}, 422, "ip: unknown field"),
    ({"rating": "up"}, 422, "answer_id: field required"),
])
def test_bad_feedback_is_a_clear_json_error(client, body, status, message):
    response = client.post("/feedback", json=body)
    assert response.status_code == status and response.json() == {"error": response.json()["error"], "status": status}
    assert message in response.json()["error"]


def test_the_log_holds_no_ip_address_or_user_agent(sample_index, engine, tmp_path):
    path = tmp_path / "log.sqlite"
    app = create_app(service_settings(sample_index[0], query_log=str(path)), engine=engine)
    agent = "Mozilla/5.0 (jrag-test-agent-7f3a)"
    headers = {"User-Agent": agent, "X-Forwarded-For": "203.0.113.9", "Referer": "https://referer.example/"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60, headers=headers) as client:
        json_id = client.post("/ask", json={"question": "富士山の標高は？"}).json()["answer_id"]
        sse_id = read_events(client.post("/ask", json={"question": "将棋盤のマスの数は？"}, headers=SSE))[-1][1]["answer_id"]
        logged(server, sse_id)
        assert client.post("/feedback", json={"answer_id": json_id, "rating": "up"}).status_code == 200
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert set(tables) == {"questions", "feedback"}
        values = [str(value) for table in tables for row in db.execute(f"SELECT * FROM {table}") for value in row]
        columns = {table: [c[1] for c in db.execute(f"PRAGMA table_info({table})")] for table in tables}
    assert len(values) == 2 * 9 + 4  # two questions, one rating: every column of every row was read
    for value in values:
        assert "127.0.0.1" not in value and "203.0.113.9" not in value and "jrag-test-agent" not in value
        assert "referer" not in value.lower()
    assert not [c for names in columns.values() for c in names if re.search(r"ip|agent|header|host|client", c)]


def test_with_the_log_off_nothing_is_written(sample_index, engine, tmp_path):
    settings = service_settings(sample_index[0].parent / "elsewhere" / "idx", query_log="off")
    app = create_app(settings, engine=engine)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/ask", json={"question": "富士山の標高は？"}).json()["answer_id"] is None
        assert read_events(client.post("/ask", json={"question": "富士山の標高は？"}, headers=SSE))[-1][1]["answer_id"] is None
        off = client.post("/feedback", json={"answer_id": "AAAA", "rating": "up"})
        assert off.status_code == 404 and "turned off" in off.json()["error"]
        assert client.get("/admin/report", headers={"X-API-Key": ADMIN_KEY}).status_code == 404
    assert not (sample_index[0].parent / "elsewhere").exists()


def test_an_unwritable_log_never_fails_an_answer(sample_index, engine, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    app = create_app(service_settings(sample_index[0], query_log=str(blocker / "log.sqlite")), engine=engine)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):
            answer = client.post("/ask", json={"question": "富士山の標高は？"})
            assert answer.status_code == 200 and "3,776メートル" in answer.json()["answer"]
            assert answer.json()["answer_id"] is None
        unavailable = client.post("/feedback", json={"answer_id": "AAAA", "rating": "up"})
        assert unavailable.status_code == 503 and str(tmp_path) not in unavailable.text
    assert [r.getMessage() for r in caplog.records if r.name == "rag.service.owners"] == [
        "query log: the query log log.sqlite cannot be created (File exists); answers go on without it"]


def test_feedback_sent_to_the_service_is_listed_by_rag_report(sample_index, engine, tmp_path, capsys):
    from rag.cli import main as rag_main

    path = tmp_path / "log.sqlite"
    app = create_app(service_settings(sample_index[0], query_log=str(path)), engine=engine)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        answer_id = client.post("/ask", json={"question": "琵琶湖の面積は？"}).json()["answer_id"]
        logged(server, answer_id)
        rated = client.post("/feedback", json={"answer_id": answer_id, "rating": "down", "comment": "貯水量も知りたい"})
        assert rated.status_code == 200
    assert rag_main(["report", "--log", str(path), "--out", str(tmp_path / "report"), "--since", "1d"]) == 0
    printed = capsys.readouterr().out
    assert "1 questions, 0 unanswered, 0 👍, 1 👎" in printed
    assert "質問: 琵琶湖の面積は？" in printed and "コメント: 貯水量も知りたい" in printed


def test_admin_report_needs_the_key_and_lists_what_was_asked(sample_index, engine, tmp_path):
    app = create_app(service_settings(sample_index[0], query_log=str(tmp_path / "log.sqlite")), engine=engine)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        ids = [client.post("/ask", json={"question": q}).json()["answer_id"]
               for q in ("富士山の標高は？", "富士山の　標高は？", "火星の首都の人口は何人ですか？")]
        logged(server, ids[-1])
        client.post("/feedback", json={"answer_id": ids[0], "rating": "down", "comment": "古い"})
        assert client.get("/admin/report").status_code == 401
        assert client.get("/admin/report", headers={"X-API-Key": "wrong"}).json() == {
            "error": "missing or wrong X-API-Key header", "status": 401}
        bad = client.get("/admin/report", params={"since": "last week"}, headers={"X-API-Key": ADMIN_KEY})
        assert bad.status_code == 422 and "not a period" in bad.json()["error"]
        report = client.get("/admin/report", params={"since": "1d"}, headers={"X-API-Key": ADMIN_KEY}).json()
        assert client.get("/admin/chart.png").status_code == 401
        chart = client.get("/admin/chart.png", params={"since": "1d"}, headers={"X-API-Key": ADMIN_KEY})
        assert client.get("/admin/chart.png", params={"since": "x"}, headers={"X-API-Key": ADMIN_KEY}).status_code == 422
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG\r\n\x1a\n") and len(chart.content) > 5000
    assert report["questions"] == 3 and report["abstentions"] == 1 and report["down_votes"] == 1
    assert report["most_asked"][0] == {"text": "富士山の標高は？", "count": 2}
    assert report["unanswered"] == [{"text": "火星の首都の人口は何人ですか？", "count": 1}]
    assert report["down_voted"][0]["comment"] == "古い" and report["down_voted"][0]["question"] == "富士山の標高は？"
    assert report["days"][-1]["questions"] == 3


def test_the_admin_page_shows_the_report_for_the_key_escaped(sample_index, engine, tmp_path):
    app = create_app(service_settings(sample_index[0], query_log=str(tmp_path / "log.sqlite")), engine=engine)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        question = "<script>alert(1)</script>火星の首都は？"
        logged(server, client.post("/ask", json={"question": question}).json()["answer_id"])
        form = client.get("/admin")
        assert form.status_code == 200 and 'name="key"' in form.text and "<table>" not in form.text
        assert "default-src 'self'" in form.headers["content-security-policy"]
        wrong = client.post("/admin", data={"key": "wrong", "since": "7d"})
        assert wrong.status_code == 401 and "管理キーが違います。" in wrong.text and "<table>" not in wrong.text
        page = client.post("/admin", data={"key": ADMIN_KEY, "since": "1d"})
        bad_period = client.post("/admin", data={"key": ADMIN_KEY, "since": "<b>"})
    assert page.status_code == 200 and "回答できなかった質問（記事にする候補）" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;火星の首都は？" in page.text and "<script>alert" not in page.text
    assert re.findall(r"<script[^>]*>", page.text) == []
    # the chart is in the page (the browser cannot send the key for /admin/chart.png), allowed by img-src data:
    chart = re.search(r'<img class="chart" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page.text)
    assert chart and base64.b64decode(chart[1]).startswith(b"\x89PNG") and "日ごとの質問数" in page.text
    assert "img-src 'self' data:" in page.headers["content-security-policy"] and "<img" not in wrong.text
    assert bad_period.status_code == 422 and "&#39;&lt;b&gt;&#39; is not a period" in bad_period.text


# ---------------------------------------------------------------- article images


def test_the_article_image_is_served_from_the_blog_folder(client):
    cited = client.post("/ask", json={"question": "東京スカイツリーの高さは？"}).json()["citations"][0]
    assert cited["image"] == "/assets/images/posts/2025-07-18-tokyo-skytree-ogp.png"  # the front matter's, as written
    image = client.get("/api/articles/2025-07-18-tokyo-skytree/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (PROJECT_ROOT / "corpus" / cited["image"].lstrip("/")).read_bytes()
    assert image.headers["x-content-type-options"] == "nosniff" and "max-age" in image.headers["cache-control"]


@pytest.mark.parametrize(("article_id", "message"), [
    ("2025-01-15-fujisan", "this article has no image"), ("no-such-article", "this article has no image"),
    ("%00", "this article has no image"),
    ("..%2F..%2Fpyproject.toml", "Not Found"),  # the slashes make it no route at all
])
def test_no_image_is_a_short_json_404(client, article_id, message):
    response = client.get(f"/api/articles/{article_id}/image")
    assert response.status_code == 404 and response.json() == {"error": message, "status": 404}


def test_an_image_missing_from_the_blog_folder_is_a_404_that_names_nothing(sample_index, engine, tmp_path):
    """The same index served with another site folder: the image is not there, and nothing says where it looked."""
    app = create_app(service_settings(sample_index[0], corpus=tmp_path), engine=engine)
    with LiveServer(app) as server:
        response = httpx.get(f"{server.url}/api/articles/2025-07-18-tokyo-skytree/image")
    assert response.status_code == 404 and str(tmp_path) not in response.text and "assets" not in response.text


# ---------------------------------------------------------------- pages and docs


def test_article_page_highlights_the_quote_and_escapes_text(client):
    quote = "例えば、コメント欄に <script>alert(1)</script> という文字列が書き込まれたとします。"
    response = client.get("/articles/2026-02-17-web-security-xss", params={"q": quote})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert "<h1 class=\"article-title\">ウェブセキュリティ入門：クロスサイトスクリプティング（XSS）を防ぐ</h1>" in html
    assert '<time datetime="2026-02-17">2026年2月17日</time>' in html and '<span class="chip">科学技術</span>' in html
    assert 'href="https://example.com/2026/02/17/web-security-xss/"' in html
    assert "<h2>XSSとは</h2>" in html and "<h3>XSSの主な種類</h3>" in html
    assert ("<p id=\"quote\"><mark>例えば、コメント欄に &lt;script&gt;alert(1)&lt;/script&gt; "
            "という文字列が書き込まれたとします。</mark>") in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert" not in html and "<img" not in html
    assert re.findall(r"<script[^>]*>", html) == []  # the article page runs no script at all


def test_article_page_without_quote_and_unknown_article(client):
    page = client.get("/articles/2025-07-18-tokyo-skytree")
    assert page.status_code == 200 and "<mark>" not in page.text and "<h2>高さ634メートル</h2>" in page.text
    missing_quote = client.get("/articles/2025-07-18-tokyo-skytree", params={"q": "<b>どこにもない</b>"})
    assert "引用箇所は本文中に見つかりませんでした。" in missing_quote.text and "<b>どこにも" not in missing_quote.text
    unknown = client.get("/articles/<script>nope")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
    assert "記事「&lt;script&gt;nope」は見つかりませんでした。" in unknown.text


def test_chat_page_and_static_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and '<html lang="ja">' in page.text and 'id="question"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/chat.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_openapi_documents_the_api_with_japanese_examples(client):
    spec = client.get("/openapi.json").json()
    assert {"/ask", "/healthz", "/readyz", "/articles/{article_id}", "/api/facets", "/admin/reload", "/feedback",
            "/admin/report"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["AskRequest"]
    assert request["additionalProperties"] is False
    assert request["examples"][0] == {"question": "東京スカイツリーの高さは？"}
    assert request["properties"]["question"]["examples"] == ["東京スカイツリーの高さは？"]
    ask_body = spec["paths"]["/ask"]["post"]["requestBody"]["content"]["application/json"]
    assert ask_body["examples"]["simple"]["value"] == {"question": "東京スカイツリーの高さは？"}
    assert "text/event-stream" in spec["paths"]["/ask"]["post"]["responses"]["200"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_docs_work_offline_under_a_content_security_policy(client):
    import base64
    import hashlib

    docs = client.get("/docs")
    assert docs.status_code == 200 and "http://" not in docs.text and "https://" not in docs.text  # no CDN
    policy = docs.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    for script in re.findall(r"<script>(.*?)</script>", docs.text, re.S):  # each inline script by its hash
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assets = re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs.text)
    assert assets and all(client.get(asset).status_code == 200 for asset in assets)


def test_every_response_says_nosniff(client):
    for response in (client.get("/static/chat.js"), client.get("/static/style.css"), client.get("/healthz"),
                     client.get("/docs-assets/swagger-ui-bundle.js"), client.get("/nowhere"), client.get("/")):
        assert response.headers["x-content-type-options"] == "nosniff"


def test_web_assets_exist():
    for name in ("templates/base.html", "templates/chat.html", "templates/article.html", "templates/error.html",
                 "static/chat.js", "static/style.css"):
        assert (PROJECT_ROOT / "web" / name).is_file(), name
    script = (PROJECT_ROOT / "web/static/chat.js").read_text(encoding="utf-8")
    assert not re.search(r"\.(innerHTML|outerHTML)\s*\+?=|insertAdjacentHTML|document\.write|eval\(", script)


# ---------------------------------------------------------------- a damaged index


def test_a_damaged_index_is_a_clear_503_without_internals(sample_index, engine, tmp_path):
    from tests.test_index import damaged_copy

    index, names = damaged_copy(sample_index, tmp_path, "truncated dense.faiss")
    app = create_app(service_settings(index), embedder=engine.embedder)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        ready = wait_for(lambda: (r := client.get("/readyz")).json()["state"] == "failed" and r)
        message = ready.json()["error"]
        assert names in message and "rag index --rebuild" in message
        assert str(tmp_path) not in message and ".cpp" not in message and "faiss::" not in message
        assert ready.json() == {"error": message, "status": 503, "state": "failed", "build": None}
        ask, facets = client.post("/ask", json={"question": "富士山の標高は？"}), client.get("/api/facets")
        assert ask.json() == facets.json() == {"error": message, "status": 503}
        for response in (ready, ask, facets):
            assert response.status_code == 503 and "retry-after" not in response.headers  # it will not pass by itself


def test_reload_into_a_corrupt_generation_keeps_the_old_engine(sample_index, engine, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(sample_index[0], index)
    app = create_app(service_settings(index), embedder=engine.embedder)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        old = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r.json())["generation"]
        corrupt = "gen-29990101T000000000000Z"
        shutil.copytree(index / old, index / corrupt)
        (index / corrupt / "chunks.sqlite").write_bytes(b"not a database" * 100)
        (index / CURRENT).write_text(corrupt + "\n")
        reload = client.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
        assert reload.status_code == 500 and reload.json() == {
            "error": f"index generation {corrupt}: chunks.sqlite cannot be read (truncated or corrupt): rebuild the "
                     f"index with `rag index --rebuild`; still serving generation {old}", "status": 500}
        assert client.get("/readyz").json()["generation"] == old
        assert "3,776メートル" in client.post("/ask", json={"question": "富士山の標高は？"}).json()["answer"]


# ---------------------------------------------------------------- slow clients, logs and headers


def test_slow_and_half_open_clients_are_closed(sample_index, engine):
    """Measured before this deadline: 150 such connections, all still open after 20 s (bench/slow_clients.py)."""
    from bench.slow_clients import stall

    settings = service_settings(sample_index[0], client_timeout=1.0)
    with LiveServer(create_app(settings, engine=engine), settings) as server:
        port = int(server.url.rsplit(":", 1)[1])
        started = time.monotonic()
        results = stall("127.0.0.1", port, 10, seconds=2.5)
        assert time.monotonic() - started < 10
        assert results == {"silent": (10, set()), "headers": (10, set()), "body": (10, {"HTTP/1.1 408 Request Timeout"})}
        with httpx.Client(base_url=server.url, timeout=30) as client:  # an ordinary client is not hurried
            assert client.post("/ask", json={"question": "富士山の標高は？"}).status_code == 200
            time.sleep(1.5)  # idle on a kept-alive connection past the header deadline: uvicorn's keep-alive rules
            late = client.post("/ask", content=iter([b'{"question": "', "富士山の標高は？".encode(), b'"}']),
                               headers={"Content-Type": "application/json"})
            assert late.status_code == 200


def test_a_late_body_is_a_408_json_error(sample_index, engine):
    import socket

    settings = service_settings(sample_index[0], client_timeout=0.5)
    with LiveServer(create_app(settings, engine=engine), settings) as server:
        sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5)
        sock.sendall(b"POST /ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        sock.close()
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "the request body did not arrive within 0.5 s", "status": 408}


def test_the_access_log_leaves_out_query_strings(sample_index):
    import logging

    from rag.service.config import service_config
    from rag.service.launcher import uvicorn_config

    uvicorn_config(None, service_config(service_settings(sample_index[0]))).configure_logging()
    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord("uvicorn.access", logging.INFO, __file__, 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/articles/x?q=quote&key=s3cret", "1.1", 200), None)
    assert all(handler.filter(record) for handler in access.handlers)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /articles/x HTTP/1.1" 200'


def test_traversal_out_of_articles_and_static_is_404(client):
    """Probes of issue 16 that held, kept."""
    for path in ("/static/../rag/settings.py", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/..%2F..%2FREADME.md",
                 "/docs-assets/..%2F..%2F__init__.py"):
        response = client.get(path)
        assert response.status_code == 404 and "Settings" not in response.text and "[project]" not in response.text
    page = client.get("/articles/..%2F..%2Fetc%2Fpasswd")
    assert page.status_code == 404 and "root:" not in page.text


def test_clients_that_leave_mid_stream_leak_no_lease(client, live_service):
    holder = live_service.app.state.holder
    for _ in range(20):
        with client.stream("POST", "/ask", json={"question": "東京スカイツリーの高さは？"}, headers=SSE) as response:
            next(response.iter_bytes())  # the first event, then the client goes away
    assert wait_for(lambda: holder._current.users == 0)
    assert client.post("/ask", json={"question": "富士山の標高は？"}).status_code == 200


BLOG = "http://blog.example:4000"  # the blog's pages, another origin than the service


def test_only_the_allowed_origins_may_call_from_the_browser(sample_index, engine):
    app = create_app(service_settings(sample_index[0], allowed_origins=f"{BLOG}, https://www.example.com/"),
                     engine=engine)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        allowed = client.options("/ask", headers={"Origin": BLOG, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == BLOG
        assert "access-control-allow-credentials" not in allowed.headers  # no cookies, ever
        asked = client.post("/ask", json={"question": "富士山の標高は？"}, headers={"Origin": BLOG})
        assert asked.status_code == 200 and asked.headers["access-control-allow-origin"] == BLOG
        assert client.get("/api/facets", headers={"Origin": "https://www.example.com"}).headers[
            "access-control-allow-origin"] == "https://www.example.com"
        refused = client.options("/ask", headers={"Origin": "https://evil.example", **preflight})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        other = client.post("/ask", json={"question": "富士山の標高は？"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers  # the browser keeps the answer from that page
        policy = client.get("/?embed=1").headers["content-security-policy"]  # the widget's panel frames the page
        assert f"frame-ancestors {BLOG} https://www.example.com;" in policy


def test_no_origin_is_allowed_by_default_and_a_bad_one_is_refused(client, sample_index):
    answered = client.post("/ask", json={"question": "富士山の標高は？"}, headers={"Origin": BLOG})
    assert answered.status_code == 200 and "access-control-allow-origin" not in answered.headers
    assert "frame-ancestors 'none'" in client.get("/").headers["content-security-policy"]  # nobody frames it
    widget = client.get("/widget.js")
    assert widget.status_code == 200 and widget.headers["content-type"].startswith("text/javascript")
    for bad in ("*", "blog.example", "https://blog.example/path", "https://*.example.com"):
        with pytest.raises(InvalidSetting, match="is not an origin"):
            create_app(service_settings(sample_index[0], allowed_origins=bad))
