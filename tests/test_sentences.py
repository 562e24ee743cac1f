"""How the extractive generator picks sentences: statements that answer, read with the sentence they
point back to, never an aside, a heading or the article's title (passages from JSQuAD-like text)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rag.generators.base import Evidence
from rag.generators.extractive import ExtractiveGenerator, ExtractiveSettings
from rag.japanese import is_heading, normalize, refers_back
from rag.question import analyse, answer_types
from rag.types import Article, Chunk, Hit


def hit(text: str, title: str = "ウィキデータ") -> Hit:
    article = Article("a1", "a1.md", title, datetime(2025, 1, 1, tzinfo=timezone.utc), "/a1", (), (), "", "",
                      text, (), "")
    return Hit(0, Chunk("a1", 0, text, 0, len(text)), article, 1.0)


def answer(question: str, text: str, title: str = "ウィキデータ") -> str:
    generator = ExtractiveGenerator(embedder=None, config=ExtractiveSettings(max_sentences=1))
    return generator.generate(Evidence(analyse(question, lambda term: 2.0), [hit(text, title)])).text


def test_a_sentence_that_points_back_is_read_with_the_sentence_before():
    text = ("ウィキデータは、ウィキメディア財団が運営する共同編集型の知識ベースである。"
            "このプロジェクトは、アレン人工知能研究所とグーグルから総額130万ユーロの寄付を受け設立された。")
    quoted = answer("グーグルから総額130万ユーロの寄付を受け設立されたプロジェクトは？", text)
    assert quoted.startswith("ウィキデータは") and "このプロジェクトは" in quoted


def test_a_sentence_that_repeats_the_asked_date_does_not_count_as_carrying_one():
    question = analyse("1951年10月4日に公布された法律は何年に改正された？", lambda term: 2.0)
    date_type = next(t for t in question.answer_types if t.name == "date")
    assert not question.carries(date_type, "1951年10月4日に公布された。")
    assert question.carries(date_type, "1981年に改正された。")


def test_the_title_line_and_headings_are_not_quoted_when_a_statement_answers():
    text = "ウィキデータ\n主な特徴\nウィキデータは2012年10月30日に公開された。"
    assert answer("ウィキデータが公開されたのはいつ？", text) == "ウィキデータは2012年10月30日に公開された。[1]"


@pytest.mark.parametrize("sentence, heading", [
    ("主な特徴", True), ("今後の展望と課題", True),
    ("総投資額: 1億4000万円", False),  # a labelled figure states something
    ("ウィキデータは2012年に公開された。", False)])
def test_headings_are_short_lines_without_a_sentence_end_or_a_figure(sentence, heading):
    assert is_heading(sentence) is heading


@pytest.mark.parametrize("sentence, points_back", [
    ("このプロジェクトは、2012年に始まった。", True), ("これを受け、国連は方針を改めた。", True),
    ("同社は売上を伸ばした。", True), ("ウィキデータは知識ベースである。", False)])
def test_sentences_that_point_back(sentence, points_back):
    assert refers_back(sentence) is points_back


@pytest.mark.parametrize("question, types", [
    ("兵庫県で最も面積が大きい市は何市か？", []),  # 面積 describes the city; it is not asked for
    ("せん断ひずみエネルギーは何基準ですか？", []),  # 何基準 is not 何基
    ("MI455X GPUが何基搭載されていますか？", ["quantity"]),
    ("1株あたりの買収価格は？", ["quantity"]),
    ("東京スカイツリーの高さは何メートル？", ["quantity"]),
    ("許可を得るためには最低何年かかる？", ["duration"]),  # how long, not when
    ("建築家養成に必要とされる教育期間は?", ["duration"]),
    ("GPT-6はいつ発売される？", ["date"]),
    ("ウィキデータは何年に公開された？", ["date"])])
def test_what_a_question_asks_for(question, types):
    assert [t.name for t in answer_types(normalize(question))] == types


def test_dates_are_the_site_time_zone_days_that_permalinks_carry():
    article = Article("a2", "a2.md", "題名", datetime(2025, 12, 28, 20, 0, tzinfo=timezone.utc), "/2025/12/29/a2",
                          (), (), "", "", "本文。", (), "")
    assert article.published_on == "2025-12-29"  # 05:00 on the 29th in Tokyo, as the permalink says
