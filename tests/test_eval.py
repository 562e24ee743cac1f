"""`rag eval`: the smoke runs CI affords (a slice of JSQuAD dev, a few questions over the sample corpus)."""

from __future__ import annotations

import json

import pytest

from rag.cli import main as rag_main
from rag.evaluation import contains_any

MODES = ("hybrid", "dense", "bm25")


def test_answers_match_across_spellings_nfkc_keeps_apart():
    assert contains_any("制作期間を1〜2カ月にまで短縮", ("1～2ヶ月",))
    assert contains_any("3か国で発売", ("3ヶ国",)) and contains_any("ＡＰＩ　２．０", ("api2.0",))
    assert not contains_any("カ月", ("ヶ月",))  # only a counter after a number is folded
    assert not contains_any("1〜3分", ("1～2ヶ月",))


@pytest.fixture(scope="module")
def jsquad_slice(shared_dir, tmp_path_factory):
    """The first 3 articles of JSQuAD dev (116 paragraphs) as a SQuAD file: a real set, indexed in seconds."""
    source = shared_dir / "eval" / "jsquad" / "valid-v1.1.json"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    data = json.loads(source.read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("jsquad") / "jsquad-slice.json"
    path.write_text(json.dumps({"version": data.get("version"), "data": data["data"][:3]}, ensure_ascii=False),
                    encoding="utf-8")
    return path


@pytest.mark.slow
def test_squad_eval_compares_the_retrievers_and_writes_the_reports(jsquad_slice, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    args = ["eval", "--dataset", str(jsquad_slice), "--retriever", "all", "--limit", "40", "--out", str(out), "-q"]
    assert rag_main(args) == 0
    captured = capsys.readouterr()
    assert "indexing" in captured.err and "(once; cached)" in captured.err
    rows = [line for line in captured.out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| retriever | R@1 | R@5 | R@10 | MRR@10 |") and [r.split()[1] for r in rows[1:]] == list(MODES)
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "recall_at_k.png", "misses.jsonl"}
    assert (out / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["meta"]["questions"] == 40 and report["meta"]["format"] == "squad"
    results = {r["mode"]: r for r in report["results"]}
    for r in results.values():
        assert r["recall"]["1"] <= r["recall"]["5"] <= r["recall"]["10"] <= 1.0
        assert r["latency_p50_ms"] > 0 and r["mean_answer_chars"] > 0
    # real retrieval on real questions: the hybrid finds nearly every gold paragraph and answers
    hybrid = results["hybrid"]
    assert hybrid["recall"]["5"] >= 0.9 and hybrid["answer_contains_gold"] >= 0.6 and hybrid["abstention_rate"] <= 0.2
    for line in (out / "misses.jsonl").read_text(encoding="utf-8").splitlines():
        miss = json.loads(line)
        assert miss["retriever"] in MODES and miss["problems"]

    assert rag_main(args) == 0  # the index is cached: no second build
    assert "indexing" not in capsys.readouterr().err


def test_jsonl_eval_reports_hits_answers_and_abstention(sample_index, tmp_path, capsys):
    questions = [
        {"id": "s1", "question": "東京スカイツリーの高さは？", "type": "factoid", "answers": ["634メートル"],
         "gold_files": ["2025-07-18-tokyo-skytree.md"]},
        {"id": "s2", "question": "将棋盤のマスの数は？", "type": "factoid", "answers": ["81マス"],
         "gold_files": ["2025-09-12-shogi-rules.md"]},
        {"id": "s3", "question": "和食がユネスコ無形文化遺産に登録されたのはいつ？", "type": "descriptive",
         "answers": ["2013年12月"], "gold_files": ["2025-08-25-washoku-unesco.md"]},
        {"id": "s4", "question": "火星の首都の人口は何人ですか？", "type": "unanswerable", "answers": []},
    ]
    dataset = tmp_path / "dev.jsonl"
    dataset.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in questions) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    assert rag_main(["eval", "--dataset", str(dataset), "--index", str(sample_index[0]), "--out", str(out), "-q"]) == 0
    assert "| abst P | abst R | wrong abst |" in capsys.readouterr().out
    (hybrid,) = json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]
    assert hybrid["mode"] == "hybrid" and hybrid["recall"]["1"] == 1.0 and hybrid["answer_hit1"] == 1.0
    assert hybrid["answer_contains_gold"] == 1.0 and hybrid["keyphrase_coverage"] == 1.0
    assert hybrid["abstention_recall"] == 1.0 and hybrid["abstention_precision"] == 1.0
    assert hybrid["wrong_abstention_rate"] == 0.0


def test_conversation_eval_measures_the_last_turn_after_asking_the_earlier_ones(sample_index, tmp_path):
    conversations = [
        {"id": "c1", "turns": [{"question": "東京スカイツリーについて教えて"},
                               {"question": "それはいつ開業した？", "type": "factoid", "answers": ["2012年5月22日"]}],
         "gold_files": ["2025-07-18-tokyo-skytree.md"], "alt_files": [], "evidence": ""},
        {"id": "c2", "turns": [{"question": "将棋盤のマスの数は？"},
                               {"question": "火星の首都の人口は何人ですか？", "type": "unanswerable", "answers": []}],
         "gold_files": [], "alt_files": [], "evidence": ""},
    ]
    dataset = tmp_path / "conversations.jsonl"
    dataset.write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in conversations) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    assert rag_main(["eval", "--dataset", str(dataset), "--index", str(sample_index[0]), "--out", str(out), "-q"]) == 0
    (hybrid,) = json.loads((out / "report.json").read_text(encoding="utf-8"))["results"]
    assert hybrid["questions"] == 2 and hybrid["answer_contains_gold"] == 1.0 and hybrid["answer_hit1"] == 1.0
    assert hybrid["abstention_recall"] == 1.0 and hybrid["wrong_abstention_rate"] == 0.0


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ('{"id": "x", "question": "q"}\nnot json\n', "dev.jsonl:2: not a question record"),
])
def test_bad_datasets_are_one_line_errors(sample_index, tmp_path, capsys, content, message):
    dataset = tmp_path / "dev.jsonl"
    if content is not None:
        dataset.write_text(content, encoding="utf-8")
    assert rag_main(["eval", "--dataset", str(dataset), "--index", str(sample_index[0]), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
