"""The Japanese chunker: sentence boundaries, merging, splitting, token limit, offsets."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from rag import parts
from rag.chunking import Chunker, paragraph_spans, split_sentences
from rag.settings import Settings
from rag.types import Article, Heading

DEFAULTS = parts.chunker_config(Settings())


def make_article(body: str, headings: tuple[Heading, ...] = ()) -> Article:
    return Article("a1", "a1.md", "題", datetime(2025, 1, 1, tzinfo=timezone.utc), "u", (), (), "", "", body,
                   headings, "h")


def char_counter(texts):
    return [len(t) + 2 for t in texts]  # an upper-bound stand-in where the real tokenizer is not the point


@pytest.mark.parametrize(
    "text, expected",
    [
        ("今日は晴れ。明日は雨。", ["今日は晴れ。", "明日は雨。"]),
        ("本当？！すごい!", ["本当？！", "すごい!"]),
        ("彼は「行く。すぐ戻る。」と言った。次へ。", ["彼は「行く。すぐ戻る。」と言った。", "次へ。"]),
        ("『題。』と（注。）を含む文。終わり", ["『題。』と（注。）を含む文。", "終わり"]),
        ("一行目\n二行目。三文目。", ["一行目", "二行目。", "三文目。"]),
        ("閉じない「括弧の文。\n次の行。", ["閉じない「括弧の文。", "次の行。"]),
        ("\u3000全角スペースで始まる。  ", ["全角スペースで始まる。"]),
        ("バージョン3.5は速い。", ["バージョン3.5は速い。"]),
    ],
)
def test_split_sentences(text, expected):
    assert [text[s:e] for s, e in split_sentences(text)] == expected


def test_split_sentences_offsets_are_shifted():
    assert split_sentences("あ。い。", offset=10) == [(10, 12), (12, 14)]


def test_paragraph_spans_handle_full_width_space_lines():
    body = "一段落目。\n\u3000\n二段落目。\n\n三段落目。"
    assert [body[s:e] for s, e in paragraph_spans(body)] == ["一段落目。", "二段落目。", "三段落目。"]


def test_short_paragraphs_merge_and_headings_split_sections():
    body = "前文です。\n\n見出しA\n\n短い。\n\nこれも短い。\n\n小見出し\n\n下の段落。\n\n見出しB\n\n別の節。"
    headings = (Heading(2, "見出しA", body.index("見出しA")), Heading(3, "小見出し", body.index("小見出し")),
                Heading(2, "見出しB", body.index("見出しB")))
    chunks = Chunker(replace(DEFAULTS, target_chars=100), char_counter).chunk(make_article(body, headings))
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("前文です。", ()),
        ("短い。\n\nこれも短い。", ("見出しA",)),
        ("下の段落。", ("見出しA", "小見出し")),
        ("別の節。", ("見出しB",)),
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]


def test_long_paragraph_splits_at_sentence_boundaries():
    sentence = "これは長い段落を作るための文です。"
    body = sentence * 60
    config = replace(DEFAULTS, target_chars=200, max_chars=300)
    chunks = Chunker(config, char_counter).chunk(make_article(body))
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk.text) <= 200
        assert chunk.text == body[chunk.char_start : chunk.char_end]
        assert chunk.text.endswith("。") and chunk.text.startswith("これは")


def test_single_sentence_over_the_token_limit_is_cut_at_commas(embedder):
    body = "、".join(["とても長い一文の部品"] * 200) + "。"
    config = replace(DEFAULTS, target_chars=10_000, max_chars=10_000, max_tokens=128)
    chunks = Chunker(config, embedder.count_tokens).chunk(make_article(body))
    assert len(chunks) > 1
    assert all(n <= 128 for n in embedder.count_tokens(["passage: " + c.text for c in chunks]))
    assert all(c.text.startswith("とても") for c in chunks)


def test_real_articles_respect_the_token_limit_offsets_and_sentences(embedder, shared_posts):
    from rag.corpus import load_article

    # the largest paragraph of the corpus (24,506 characters) and an ordinary article
    names = ["2026-01-13-1-inflection-aiai.md", "2025-12-28-2-amazon-bedrockllm15.md"]
    config = DEFAULTS
    chunker = Chunker(config, embedder.count_tokens)
    for name in names:
        article = load_article(shared_posts / name, shared_posts, site_url="https://ai-media.co.jp",
                               permalink="/:year/:month/:day/:title/", rules="allforces")
        chunks = chunker.chunk(article)
        assert chunks
        tokens = embedder.count_tokens([config.passage_prompt + c.text for c in chunks])
        assert max(tokens) <= config.max_tokens
        sentence_starts = {s for p0, p1 in paragraph_spans(article.body)
                           for s, _ in split_sentences(article.body[p0:p1], p0)}
        sentence_ends = {e for p0, p1 in paragraph_spans(article.body)
                         for _, e in split_sentences(article.body[p0:p1], p0)}
        for chunk in chunks:
            assert chunk.text == article.body[chunk.char_start : chunk.char_end]
            assert chunk.char_start in sentence_starts, "a chunk starts mid-sentence"
            assert chunk.char_end in sentence_ends, "a chunk ends mid-sentence"
            single_sentence = len(split_sentences(chunk.text)) == 1
            assert len(chunk.text) <= config.max_chars or single_sentence


def test_a_run_on_line_costs_linear_time(embedder):
    """One 1 MB line with no sentence end or comma: cut into target-size pieces before tokens are counted
    (halving it by tokenising took 16 s and tokenised each character ~10 times)."""
    tokenised = []

    def counting(texts):
        tokenised.append(sum(len(t) for t in texts))
        return embedder.count_tokens(texts)

    body = "あいうえおかきくけこ東京日本語" * 70_000
    chunks = Chunker(DEFAULTS, counting).chunk(make_article(body))
    assert sum(tokenised) <= 1.2 * len(body)
    assert all(len(c.text) <= DEFAULTS.target_chars and body[c.char_start:c.char_end] == c.text for c in chunks)
    assert "".join(c.text for c in chunks) == body
