"""Fusion, the dense slot, the date intent and the analysed question: pure functions first, then the
retriever over the sample index with each fusion and re-weighting turned on."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from rag.question import RECENT_INTENT, analyse, date_intent
from rag.retrieval import Fusion, Mode, Retriever, convex, keep_dense_best, rrf
from rag.types import Filters

# ---------------------------------------------------------------- fusion


def test_convex_normalises_each_list_and_weights_them():
    fused = convex([{1: 0.9, 2: 0.5, 3: 0.1}, {2: 12.0, 4: 2.0}], [0.3, 0.7])
    assert fused[1] == pytest.approx(0.3)  # best dense, absent from BM25 (its minimum, 0)
    assert fused[2] == pytest.approx(0.3 * 0.5 + 0.7)
    assert fused[3] == pytest.approx(0.0) and fused[4] == pytest.approx(0.0)


@pytest.mark.parametrize("lists", [[{}, {}], [{}, {5: 1.0}], [{5: 2.0, 6: 2.0}, {}]])
def test_convex_handles_empty_lists_and_equal_scores(lists):
    fused = convex(lists, [0.5, 0.5])
    assert set(fused) == set().union(*lists)
    assert all(value >= 0 for value in fused.values())


def test_rrf_rewards_agreement_and_weights_lists():
    fused = rrf([[1, 2, 3], [2, 1]], [0.5, 0.5], k=60)
    assert fused[1] == fused[2] == pytest.approx(0.5 / 61 + 0.5 / 62)
    assert fused[3] == pytest.approx(0.5 / 63)
    assert rrf([[1], [2]], [0.9, 0.1])[1] > rrf([[1], [2]], [0.9, 0.1])[2]
    assert rrf([], []) == {}


def test_the_dense_best_is_moved_into_the_slot_only_when_it_sits_lower():
    dense = {9: 0.95, 1: 0.5}
    assert keep_dense_best([1, 2, 3, 4, 5, 6, 9], dense, 5) == [1, 2, 3, 4, 9, 5, 6]
    assert keep_dense_best([9, 1, 2], dense, 5) == [9, 1, 2]  # already among the first five
    assert keep_dense_best([1, 2, 3, 4, 5, 6], dense, 5) == [1, 2, 3, 4, 9, 5]  # not ranked at all: it enters
    assert keep_dense_best([1, 2], dense, 5) == [1, 9]  # a short ranking keeps its length
    assert keep_dense_best([1, 2, 3], dense, 0) == [1, 2, 3]  # 0 turns it off
    assert keep_dense_best([1, 2, 3], {}, 5) == [1, 2, 3]


# ---------------------------------------------------------------- the question


@pytest.mark.parametrize("question, intent", [
    ("2025年3月に発表されたモデルは？", (date(2025, 3, 1), date(2025, 4, 1))),
    ("２０２５年１２月のニュースは？", (date(2025, 12, 1), date(2026, 1, 1))),  # full-width digits, December
    ("2024年の売上は？", (date(2024, 1, 1), date(2025, 1, 1))),
    ("最新のAIモデルは？", RECENT_INTENT),
    ("今年発表されたものは？", RECENT_INTENT),
    ("2025年13月の記事は？", (date(2025, 1, 1), date(2026, 1, 1))),  # no month 13: the year remains
    ("富士山の標高は？", None),
])
def test_date_intent(question, intent):
    assert date_intent(question) == intent


def test_the_question_is_analysed_once_into_everything_later_steps_read():
    weights = {"スカイツリー": 3.0, "高い": 1.0}
    question = analyse("東京スカイツリーの高さは何メートル？", lambda term: weights.get(term, 2.0))
    assert "何" not in question.terms and "スカイツリー" in question.query.terms  # framing words out, pairs in
    assert set(question.weights) == set(question.terms)
    assert question.answer_types, "高さ asks for a quantity"
    assert question.query is question.own_query and not question.follows_up
    assert question.coverage(set(question.terms)) == pytest.approx(1.0)
    assert question.coverage(set()) == 0.0


def test_a_follow_up_searches_with_the_previous_question_but_answers_its_own():
    follow_up = analyse("それはいつ開業した？", lambda term: 1.0, previous="東京スカイツリーについて教えて")
    assert follow_up.follows_up
    assert follow_up.query.text == "東京スカイツリーについて教えて それはいつ開業した？"
    assert "スカイツリー" in follow_up.query.terms and "スカイツリー" not in follow_up.terms
    alone = follow_up.alone()
    assert not alone.follows_up and alone.query == follow_up.own_query and alone.terms == follow_up.terms


# ---------------------------------------------------------------- the retriever over the sample index


@pytest.fixture(scope="module")
def retriever(engine):
    return engine.retriever


def search(retriever: Retriever, question: str, k: int = 5, **config):
    tuned = Retriever(retriever.store, retriever.embedder, replace(retriever.config, **config))
    return tuned.search(analyse(question, retriever.store.term_weight), k)


def test_rrf_fusion_finds_the_answer_too(retriever):
    result = search(retriever, "東京スカイツリーの高さは何メートル？", fusion=Fusion.RRF)
    assert result.hits[0].article.article_id == "2025-07-18-tokyo-skytree"
    assert all(0 < hit.score <= 1 / 61 for hit in result.hits)  # rank scores: weights sum to 1, k = 60


@pytest.mark.parametrize("mode", list(Mode))
def test_each_mode_finds_the_answer(retriever, mode):
    result = search(retriever, "富士山の標高は何メートル？", mode=mode)
    assert result.hits[0].article.article_id == "2025-01-15-fujisan"
    assert (result.query_vector is None) == (mode is Mode.BM25)


def test_the_date_boost_favours_articles_of_the_asked_for_period(retriever):
    question = "2026年3月のAIの歴史の記事は？"
    plain = search(retriever, question, k=10)
    boosted = search(retriever, question, k=10, date_boost=5.0)
    in_march = [h.score for h in boosted.hits if h.article.date.date() >= date(2026, 3, 1)]
    assert boosted.hits[0].article.article_id == "2026-03-10-ai-history-japan"
    assert in_march and max(in_march) > max(h.score for h in plain.hits)


def test_the_recurrence_penalty_lowers_a_passage_shared_by_two_articles(retriever):
    shared = next(h for h in search(retriever, "Transformerの注意機構とは？", k=20).hits if h.n_articles > 1)
    penalised = {h.text_id: h.score for h in search(retriever, "Transformerの注意機構とは？", k=20,
                                                   recurrence_penalty=1.0).hits}
    assert penalised.get(shared.text_id, 0.0) < shared.score


def test_filters_are_pushed_into_the_store(retriever):
    result = retriever.search(analyse("AIの歴史", retriever.store.term_weight), 5, Filters(category="文化"))
    assert result.hits and all("文化" in h.article.categories for h in result.hits)
    nothing = retriever.search(analyse("AIの歴史", retriever.store.term_weight), 5, Filters(category="存在しない"))
    assert nothing.hits == [] and nothing.notice.code == "no_article_matches_filters"
