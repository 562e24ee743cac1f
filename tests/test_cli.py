"""The `rag` command line, run in-process through its main()."""

from __future__ import annotations

import io
import json

import pytest

from rag.cli import main as rag_main

ANSWER_FIELDS = {"question", "answer", "abstained", "generator", "citations", "related", "timings_ms", "notice",
                 "notice_code", "repairs", "short_answer", "answer_id"}
CITATION_FIELDS = {"n", "article_id", "title", "date", "url", "categories", "passage", "quote", "quote_start",
                   "quote_end", "score", "also_in", "image"}


@pytest.fixture()
def index_env(sample_index, monkeypatch):
    monkeypatch.setenv("RAG_INDEX", str(sample_index[0]))


def test_ask_json_prints_the_answer_object(index_env, capsys):
    assert rag_main(["ask", "将棋盤のマスの数は？", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == ANSWER_FIELDS
    assert answer["citations"] and set(answer["citations"][0]) == CITATION_FIELDS
    assert "81マス" in answer["answer"]


def test_ask_prints_a_readable_answer_with_sources(index_env, capsys):
    assert rag_main(["ask", "東京スカイツリーが開業したのはいつ？"]) == 0
    out = capsys.readouterr().out
    assert "出典:" in out and "[1] 東京スカイツリー" in out and "https://example.com/2025/07/18/tokyo-skytree/" in out


def test_ask_reads_questions_from_stdin_as_json_lines(index_env, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("富士山の標高は？\n\n琵琶湖の面積は？\n"))
    assert rag_main(["ask"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["question"] for line in lines] == ["富士山の標高は？", "琵琶湖の面積は？"]


def test_ask_batch_lines_may_carry_a_conversation(index_env, capsys, monkeypatch):
    follow_up = {"question": "それはいつ開業した？", "history": [
        {"role": "user", "content": "東京スカイツリーについて教えて"},
        {"role": "assistant", "content": "東京スカイツリーは電波塔です。[1]", "articles": ["2025-07-18-tokyo-skytree"]}]}
    lines = ["将棋盤のマスの数は？", json.dumps(follow_up, ensure_ascii=False), '{"question": 3}', '{"history": ']
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert rag_main(["ask"]) == 0
    plain, conversation, bad_type, broken = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert "81マス" in plain["answer"]
    assert "2012年5月22日" in conversation["answer"] and conversation["question"] == "それはいつ開業した？"
    assert bad_type["line"] == 3 and "question object" in bad_type["error"]
    assert broken["line"] == 4 and "not a question object" in broken["error"]


@pytest.mark.parametrize("argv, message", [
    (["ask", "  "], "the question is empty"),
    (["ask", "質問", "--index", "/nonexistent/index"], "no index at /nonexistent/index"),
])
def test_ask_errors_are_one_line_and_exit_2(index_env, capsys, argv, message):
    assert rag_main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"rag: error: {err.removeprefix('rag: error: ').strip()}\n" and message in err


def test_bad_date_flag_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        rag_main(["ask", "質問", "--since", "2025-13-01"])
    assert exit_info.value.code == 2
    assert "is not an ISO date" in capsys.readouterr().err


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit):
        rag_main(["--help"])
    out = capsys.readouterr().out
    for command in ("model", "index", "ask", "eval"):
        assert command in out


def test_invalid_utf8_and_lone_surrogates_are_one_line_errors(tmp_path):
    """Invalid UTF-8 in an argument (Python reads it as a lone surrogate) fails before the model loads."""
    import os
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RAG_INDEX": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", b"AI\xff\xfe\xe3\x81"], env=env,
                          capture_output=True, timeout=120, cwd=PROJECT_ROOT)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == ("rag: error: the question is not valid Unicode: lone surrogate U+DCFF at "
                                    "character 3 (invalid UTF-8, or a \\u escape without its pair)\n")


def test_a_bad_line_in_batch_mode_is_that_lines_error(index_env, capsys, monkeypatch):
    lines = ["富士山の標高は？".encode(), b"\xff\xfe broken", b'{"question": "AI\\ud800"}',
             b'{"question": "x", "history": [{"role": "user", "content": "\\udc00"}]}', "琵琶湖の面積は？".encode()]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n"), encoding="utf-8"))
    assert rag_main(["ask"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a.get("line") for a in answers] == [None, 2, 3, 4, None]
    assert answers[0]["citations"] and answers[4]["citations"]
    assert "lone surrogate U+DCFF at character 1" in answers[1]["error"]
    assert answers[1]["question"] == "\\udcff\\udcfe broken"
    assert "lone surrogate U+D800 at character 3" in answers[2]["error"] and answers[2]["question"] == "AI\\ud800"
    assert answers[3]["error"].startswith("history turn 1 is not valid Unicode")
