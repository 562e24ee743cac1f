"""Answers on the sample corpus: verbatim quotes, citation numbering, filters, abstention, timings."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from rag.answer import ABSTAIN_TEXT
from rag.engine import AskOptions
from rag.errors import InvalidQuestion, UnknownGenerator
from rag.types import Filters, NoticeCode

QUESTIONS = Path(__file__).resolve().parent.parent / "corpus" / "QUESTIONS.md"


def sample_questions() -> list[tuple[str, str, str]]:
    """(file, question, answer) rows of corpus/QUESTIONS.md."""
    rows = []
    for line in QUESTIONS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].endswith(".md"):
            rows.append((cells[0].removesuffix(".md"), cells[1], cells[2].strip("`")))
    return rows


def test_questions_file_is_parsed():
    assert len(sample_questions()) >= 20


@pytest.mark.parametrize("article_id, question, gold", sample_questions())
def test_answers_quote_verbatim_and_cite_the_right_article(engine, article_id, question, gold):
    answer = engine.ask(question)
    assert not answer.abstained, answer
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", answer.answer)]
    assert markers == [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    for citation in answer.citations:
        assert citation.quote == citation.passage[citation.quote_start : citation.quote_end]
        assert f"{citation.quote}[{citation.n}]" in answer.answer
    assert answer.citations[0].article_id == article_id or article_id in answer.citations[0].also_in


def test_most_sample_answers_contain_the_gold_string(engine):
    rows = sample_questions()
    found = sum(gold in engine.ask(question).answer for _, question, gold in rows)
    assert found / len(rows) >= 0.7


def test_citation_fields_and_timings(engine):
    answer = engine.ask("東海道新幹線が開業したのはいつ？")
    c = answer.citations[0]
    assert c.url == "https://example.com/2025/06/30/tokaido-shinkansen/"
    assert c.date == "2025-06-30" and c.categories == ["交通", "科学技術"]
    assert set(answer.timings_ms) == {"embed", "search", "compose", "total"}
    assert all(v >= 0 for v in answer.timings_ms.values())
    assert answer.generator == "extractive"


def test_off_topic_question_abstains_and_lists_related(engine):
    answer = engine.ask("火星の首都の人口は何人ですか？")
    assert answer.abstained and answer.answer == ABSTAIN_TEXT
    assert answer.citations == [] and answer.related


def test_filters_restrict_the_articles(engine):
    only_culture = engine.ask("日本の歴史について教えて", AskOptions(filters=Filters(category="文化")))
    cited = [c.article_id for c in only_culture.citations] + [r.article_id for r in only_culture.related]
    assert cited and all(a in {"2025-08-25-washoku-unesco", "2025-09-12-shogi-rules", "2025-10-14-haiku-basics",
                                "2025-11-05-nihoncha"} for a in cited)
    window = engine.ask("富士山の標高は？", AskOptions(filters=Filters(date_from=date(2025, 6, 1),
                                                                  date_to=date(2025, 12, 31))))
    dates = [c.date for c in window.citations] + [r.date for r in window.related]
    assert all("2025-06-01" <= d <= "2025-12-31" for d in dates)
    tagged = engine.ask("将棋の駒は何種類？", AskOptions(filters=Filters(tag="将棋")))
    assert {c.article_id for c in tagged.citations} <= {"2025-09-12-shogi-rules"}


def test_filter_matching_nothing_is_an_empty_result_with_a_message(engine):
    answer = engine.ask("富士山の標高は？", AskOptions(filters=Filters(category="存在しないカテゴリ")))
    assert answer.abstained and answer.citations == [] and answer.related == []
    assert answer.notice == "no article matches the filters"
    assert answer.notice_code == NoticeCode.NO_ARTICLE_MATCHES_FILTERS


def test_bad_questions_and_generators_are_clear_errors(engine):
    with pytest.raises(InvalidQuestion):
        engine.ask("   ")
    with pytest.raises(InvalidQuestion, match="1000"):
        engine.ask("あ" * 1001)
    with pytest.raises(UnknownGenerator, match="extractive"):
        engine.ask("富士山の標高は？", AskOptions(generator="nope"))


def test_follow_up_keeps_the_topic_and_a_new_topic_is_searched_alone(engine):
    from rag.engine import Turn

    history = (Turn("user", "東京スカイツリーについて教えて"), Turn("assistant", "東京スカイツリーは電波塔です。[1]"))
    follow_up = engine.ask("それはいつ開業した？", AskOptions(history=history))
    assert follow_up.citations[0].article_id == "2025-07-18-tokyo-skytree"
    assert "2012年5月22日" in follow_up.answer
    new_topic = engine.ask("東海道新幹線が開業したのはいつ？", AskOptions(history=history))
    assert not new_topic.abstained and "1964年10月1日" in new_topic.answer


@pytest.mark.parametrize("question", ["富士山の標高は何メートル？", "和食の特徴は？", "新幹線の技術について教えて"])
def test_hybrid_keeps_the_dense_best_passage_among_the_first_five(engine, question):
    result = engine.retrieve(engine.analyse(question), 10)
    dense = engine.store.dense_search(result.query_vector, 100, Filters())
    best = max(dense, key=dense.get)
    assert best in [hit.text_id for hit in result.hits[:5]]
    assert len({hit.text_id for hit in result.hits}) == len(result.hits) == 10


def test_a_follow_up_is_about_the_articles_the_previous_answer_cited(engine):
    from rag.engine import Turn

    vague = Turn("user", "その建物について教えて")  # names nothing: only the cited article says what it is about
    plain = engine.ask("それはいつ開業した？", AskOptions(history=(vague, Turn("assistant", "電波塔です。[1]"))))
    cited = engine.ask("それはいつ開業した？", AskOptions(history=(
        vague, Turn("assistant", "電波塔です。[1]", articles=("2025-07-18-tokyo-skytree",)))))
    assert plain.citations[0].article_id != "2025-07-18-tokyo-skytree"
    assert cited.citations[0].article_id == "2025-07-18-tokyo-skytree" and "2012年5月22日" in cited.answer


def test_a_question_asked_on_an_article_page_prefers_that_article(engine):
    plain = engine.ask("それはいつ開業した？")
    on_page = engine.ask("それはいつ開業した？", AskOptions(article="2025-07-18-tokyo-skytree"))
    assert plain.citations[0].article_id != "2025-07-18-tokyo-skytree"
    assert on_page.citations[0].article_id == "2025-07-18-tokyo-skytree" and "2012年5月22日" in on_page.answer
    named = engine.ask("東海道新幹線が開業したのはいつ？", AskOptions(article="2025-07-18-tokyo-skytree"))
    assert "1964年10月1日" in named.answer  # a question naming something else is not held to the page
