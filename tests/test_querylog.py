"""The query log (rag/querylog.py) on a real SQLite file, and `rag report` reading it."""

from __future__ import annotations

import csv
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rag.cli import main as rag_main
from rag.errors import InvalidPeriod, QueryLogUnreadable, UnknownAnswer
from rag.querylog import Entry, QueryLog, QueryLogConfig, Rating, parse_since, question_key

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def entry(question: str, abstained: bool = False, answer: str = "答えです。[1]") -> Entry:
    return Entry(question, 0, answer, abstained, "extractive", () if abstained else ("2025-01-15-fujisan",), None)


def open_log(path: Path, now: datetime = NOW, days: int = 90) -> QueryLog:
    return QueryLog(QueryLogConfig(path, days), clock=lambda: now)


def fill(query_log: QueryLog) -> dict[str, str]:
    """A week of questions: the same one written three ways, two unanswered, one answer rated down."""
    ids = {}
    for question, abstained in [("富士山の標高は？", False), ("富士山の　標高は？", False), ("富士山の標高は?", False),
                                ("火星の首都の人口は？", True), ("火星の首都の人口は？", True), ("AIとは？", True),
                                ("将棋盤のマスの数は？", False)]:
        ids[question] = answer_id = query_log.new_id()
        query_log.record(answer_id, entry(question, abstained))
    query_log.feedback(ids["将棋盤のマスの数は？"], Rating.DOWN, "マスの数ではなく駒の数が書かれていた")
    query_log.feedback(ids["富士山の標高は？"], Rating.UP)
    return ids


def test_questions_are_the_same_after_nfkc_and_whitespace_folding():
    assert question_key("富士山の　標高は？ ") == question_key("富士山の標高は?") != question_key("富士山の高さは？")
    assert question_key("ＡＩとは？\n") == "aiとは?" and question_key("GPT  6 とは") == "gpt 6とは"


@pytest.mark.parametrize("text, start", [
    ("7d", NOW - timedelta(days=7)), ("24h", NOW - timedelta(hours=24)), (" 30d ", NOW - timedelta(days=30)),
    ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
])
def test_since_periods(text, start):
    assert parse_since(text, NOW) == start


@pytest.mark.parametrize("text", ["0d", "7", "7w", "-1d", "2026-13-01", "2026/11/01", "", "last week"])
def test_bad_since_periods_say_what_to_write(text):
    with pytest.raises(InvalidPeriod, match="write 7d"):
        parse_since(text, NOW)


def test_report_counts_groups_and_lists(tmp_path):
    query_log = open_log(tmp_path / "log.sqlite")
    fill(query_log)
    report = query_log.report(parse_since("7d", NOW))
    assert (report.questions, report.abstentions, report.up_votes, report.down_votes) == (7, 3, 1, 1)
    assert [(q.text, q.count) for q in report.most_asked][:2] == [("富士山の標高は？", 3), ("火星の首都の人口は？", 2)]
    assert [(q.text, q.count) for q in report.unanswered] == [("火星の首都の人口は？", 2), ("AIとは？", 1)]
    [down] = report.down_voted
    assert down.question == "将棋盤のマスの数は？" and down.comment == "マスの数ではなく駒の数が書かれていた"
    assert [d.date for d in report.days] == [f"2026-11-{n}" for n in range(25, 31)] + ["2026-12-01", "2026-12-02"]
    assert report.days[-1].questions == 7 and sum(d.questions for d in report.days[:-1]) == 0


def test_a_second_rating_replaces_the_first_and_unknown_ids_are_refused(tmp_path):
    query_log = open_log(tmp_path / "log.sqlite")
    answer_id = query_log.new_id()
    query_log.record(answer_id, entry("富士山の標高は？"))
    query_log.feedback(answer_id, Rating.DOWN, "違う")
    query_log.feedback(answer_id, Rating.UP)
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        assert db.execute("SELECT rating, comment FROM feedback").fetchall() == [("up", None)]
    with pytest.raises(UnknownAnswer, match="no answer with id 'nope'"):
        query_log.feedback("nope", Rating.UP)


def test_retention_deletes_old_questions_and_their_feedback(tmp_path):
    path = tmp_path / "log.sqlite"
    old = open_log(path, now=NOW - timedelta(days=31))
    old_id = old.new_id()
    old.record(old_id, entry("古い質問"))
    old.feedback(old_id, Rating.DOWN)
    recent = open_log(path, now=NOW - timedelta(days=29))
    recent.record(recent.new_id(), entry("新しい質問"))
    open_log(path, days=30)  # opening purges
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT question FROM questions").fetchall() == [("新しい質問",)]
        assert db.execute("SELECT count(*) FROM feedback").fetchone() == (0,)


def test_the_file_is_versioned_and_in_wal_mode(tmp_path):
    path = tmp_path / "log.sqlite"
    open_log(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(QueryLogUnreadable, match="schema version 7; this version of jrag reads 1"):
        open_log(path)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 200)
    with pytest.raises(QueryLogUnreadable, match="junk.sqlite is damaged or not a query log"):
        open_log(tmp_path / "junk.sqlite")


def _write_many(path: str, count: int) -> None:
    query_log = QueryLog(QueryLogConfig(Path(path), 90))
    for _ in range(count):
        query_log.record(query_log.new_id(), entry("並行して書く"))


def test_worker_processes_write_one_file_at_once(tmp_path):
    path = tmp_path / "log.sqlite"
    open_log(path)
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as uvicorn's workers are
    writers = [context.Process(target=_write_many, args=(str(path), 100)) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(DISTINCT answer_id) FROM questions").fetchone() == (400,)


# ---------------------------------------------------------------- rag report


def test_rag_report_prints_the_lists_and_writes_csv_and_png(tmp_path, capsys):
    path = tmp_path / "log.sqlite"
    fill(open_log(path, now=datetime.now(UTC)))
    out = tmp_path / "report"
    assert rag_main(["report", "--log", str(path), "--out", str(out), "--since", "7d"]) == 0
    printed = capsys.readouterr().out
    most_asked = printed.split("よく聞かれる質問:\n")[1].split("\n\n")[0].splitlines()
    assert most_asked[:2] == ["      3  富士山の標高は？", "      2  火星の首都の人口は？"]
    unanswered = printed.split("回答できなかった質問（記事にする候補）:\n")[1].split("\n\n")[0].splitlines()
    assert unanswered == ["      2  火星の首都の人口は？", "      1  AIとは？"]
    assert "質問: 将棋盤のマスの数は？" in printed and "コメント: マスの数ではなく駒の数が書かれていた" in printed
    assert "7 questions, 3 unanswered, 1 👍, 1 👎" in printed
    with (out / "report.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and rows[-1] == {"date": datetime.now(UTC).date().isoformat(), "questions": "7",
                                           "abstentions": "3", "down_votes": "1"}
    assert (out / "questions_per_day.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out / 'report.csv'}, {out / 'questions_per_day.png'}" in printed


@pytest.mark.parametrize("argv, message", [
    (["report", "--since", "last-week"], "since: 'last-week' is not a period"),
    (["report", "--log", "/nonexistent/log.sqlite"], "no query log at /nonexistent/log.sqlite"),
    (["report", "--log", "off"], "the query log is turned off"),
])
def test_rag_report_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message, monkeypatch):
    path = tmp_path / "log.sqlite"
    open_log(path)
    monkeypatch.setenv("RAG_QUERY_LOG", str(path))
    assert rag_main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"rag: error: {err.removeprefix('rag: error: ').strip()}\n" and message in err
