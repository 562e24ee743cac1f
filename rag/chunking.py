"""Split a cleaned article body into passages: paragraph based, Japanese sentence aware.

Every chunk is a contiguous span of the body (`text == body[char_start:char_end]`), so citations can
point back into the article. Chunks never cross a heading and never cut a sentence, except a single
sentence that alone exceeds the token limit (then it is cut at a comma, else at the limit).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.types import Article, Chunk

TokenCounter = Callable[[Sequence[str]], list[int]]

SENTENCE_END = "。！？!?"
OPENING, CLOSING = "「『（(【", "」』）)】"
PARAGRAPH_BREAK = re.compile(r"\n[ \t\u3000]*\n")
SOFT_BREAK = "、，, "
# A "sentence" this many times RAG_CHUNK_MAX_CHARS is run-on text (the longest real one in the shared corpus is
# 945 characters): it is cut into target-size pieces before any token is counted, so one pathological line
# costs linear time (halving it by tokenising took 16 s for 1 MB).
RUN_ON_FACTOR = 8


@dataclass(frozen=True)
class ChunkerConfig:
    # A paragraph is the natural unit and keeps repeated news paragraphs identical across articles (so
    # they are embedded once); only runs of paragraphs shorter than min_chars merge.
    min_chars: int
    target_chars: int  # merged paragraphs and split sentence groups stay within this size
    max_chars: int  # a paragraph longer than this splits at sentence boundaries
    max_tokens: int  # hard limit in model tokens, passage prompt and special tokens included
    passage_prompt: str


def split_sentences(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """Sentence spans (start, end) of `text`, shifted by `offset`, whitespace trimmed.

    A sentence ends after 。！？!? (with any closing brackets that follow) unless it sits inside
    「」『』（）, and always at a line end, which also resets an unbalanced bracket.
    """
    spans: list[tuple[int, int]] = []
    depth, start, i, n = 0, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            _add_span(spans, text, start, i, offset)
            start, depth = i + 1, 0
        elif ch in OPENING:
            depth += 1
        elif ch in CLOSING:
            depth = max(0, depth - 1)
        elif ch in SENTENCE_END and depth == 0:
            while i + 1 < n and (text[i + 1] in SENTENCE_END or text[i + 1] in CLOSING):
                i += 1
            _add_span(spans, text, start, i + 1, offset)
            start = i + 1
        i += 1
    _add_span(spans, text, start, n, offset)
    return spans


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span without surrounding whitespace, or None when it is all whitespace."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    lead = start + len(piece) - len(piece.lstrip())
    return lead, lead + len(stripped)


def _add_span(spans: list[tuple[int, int]], text: str, start: int, end: int, offset: int) -> None:
    span = _trim(text, start, end)
    if span:
        spans.append((offset + span[0], offset + span[1]))


def paragraph_spans(body: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in PARAGRAPH_BREAK.finditer(body):
        _add_span(spans, body, start, m.start(), 0)
        start = m.end()
    _add_span(spans, body, start, len(body), 0)
    return spans


def _sections(article: Article) -> list[tuple[tuple[str, ...], list[tuple[int, int]]]]:
    """Paragraph spans grouped by the heading path they sit under; heading lines themselves excluded."""
    heading_at = {h.start: h for h in article.headings}
    path: list[tuple[int, str]] = []
    sections: list[tuple[tuple[str, ...], list[tuple[int, int]]]] = [((), [])]
    for start, end in paragraph_spans(article.body):
        heading = heading_at.get(start)
        if heading is None:
            sections[-1][1].append((start, end))
            continue
        path = [(level, text) for level, text in path if level < heading.level] + [(heading.level, heading.text)]
        sections.append((tuple(text for _, text in path), []))
    return [(p, spans) for p, spans in sections if spans]


def _pack(spans: list[tuple[int, int]], target: int, min_chars: int | None = None) -> list[tuple[int, int]]:
    """Merge consecutive spans while the merged span stays within `target` characters.

    With `min_chars`, only runs of short spans (each under `min_chars`) merge: a full paragraph keeps
    its exact text, so the same paragraph in two articles stays one chunk text, embedded once.
    """
    packed: list[tuple[int, int]] = []
    previous_short = False
    for start, end in spans:
        short = min_chars is None or end - start < min_chars
        if packed and short and previous_short and end - packed[-1][0] <= target:
            packed[-1] = (packed[-1][0], end)
        else:
            packed.append((start, end))
        previous_short = short
    return packed


class Chunker:
    def __init__(self, config: ChunkerConfig, count_tokens: TokenCounter):
        self.config = config
        self.count_tokens = count_tokens

    def chunk(self, article: Article) -> list[Chunk]:
        body = article.body
        chunks: list[Chunk] = []
        for path, paragraphs in _sections(article):
            units: list[tuple[int, int]] = []
            for start, end in paragraphs:
                if end - start > self.config.max_chars:
                    sentences = [piece for sentence in split_sentences(body[start:end], start)
                                 for piece in self._run_on_pieces(body, sentence)]
                    units.extend(_pack(sentences, self.config.target_chars))
                else:
                    units.append((start, end))
            merged = _pack(units, self.config.target_chars, self.config.min_chars)
            for start, end in self._within_token_limit(body, merged):
                chunks.append(Chunk(article.article_id, len(chunks), body[start:end], start, end, path))
        return chunks

    def _run_on_pieces(self, body: str, span: tuple[int, int]) -> list[tuple[int, int]]:
        """The span itself, or for run-on text pieces of up to target_chars, each cut after its last soft break."""
        start, end = span
        if end - start <= RUN_ON_FACTOR * self.config.max_chars:
            return [span]
        pieces = []
        while start < end:
            stop = min(start + self.config.target_chars, end)
            if stop < end:
                soft = max(body.rfind(ch, start + 1, stop) for ch in SOFT_BREAK)
                stop = soft + 1 if soft > start else stop
            piece = _trim(body, start, stop)
            if piece:
                pieces.append(piece)
            start = stop
        return pieces

    def _tokens(self, texts: Sequence[str]) -> list[int]:
        return self.count_tokens([self.config.passage_prompt + t for t in texts])

    def _within_token_limit(self, body: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        limit = self.config.max_tokens
        out: list[tuple[int, int]] = []
        for span, tokens in zip(spans, self._tokens([body[s:e] for s, e in spans])):
            out.extend([span] if tokens <= limit else self._split_to_limit(body, span))
        return out

    def _split_to_limit(self, body: str, span: tuple[int, int]) -> list[tuple[int, int]]:
        """Halve an over-long span at the sentence boundary nearest its middle, recursively."""
        start, end = span
        sentences = split_sentences(body[start:end], start)
        if len(sentences) == 1:
            return self._cut_sentence(body, sentences[0])
        middle = (start + end) / 2
        cut = min(range(1, len(sentences)), key=lambda i: abs(sentences[i][0] - middle))
        halves = [(sentences[0][0], sentences[cut - 1][1]), (sentences[cut][0], sentences[-1][1])]
        return self._within_token_limit(body, halves)

    def _cut_sentence(self, body: str, span: tuple[int, int]) -> list[tuple[int, int]]:
        """Last resort for one sentence over the limit: cut near the middle, at a comma if there is one."""
        start, end = span
        text = body[start:end]
        middle = len(text) // 2
        commas = [i + 1 for i, ch in enumerate(text) if ch in SOFT_BREAK and 0 < i + 1 < len(text)]
        cut = min(commas, key=lambda i: abs(i - middle)) if commas else middle
        halves = [_trim(body, start, start + cut), _trim(body, start + cut, end)]
        return self._within_token_limit(body, [h for h in halves if h])
