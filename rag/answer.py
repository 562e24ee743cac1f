"""Turn a generator's draft into the Answer object: numbered citations, related articles, abstention."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.generators.base import ABSTAIN_TEXT, Draft
from rag.question import Question
from rag.types import Answer, Citation, Hit, NoticeCode, Related, ShortAnswer

MARKER = re.compile(r"\[\d+\]")


def marker_pieces(text: str) -> Iterator[str]:
    """The answer text in pieces, each ending after a `[n]` marker: one sentence and its citation."""
    start = 0
    for match in MARKER.finditer(text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def related_articles(hits: list[Hit], exclude: set[str], limit: int = 5) -> list[Related]:
    related: dict[str, Related] = {}
    for hit in hits:
        a = hit.article
        if a.article_id not in exclude and a.article_id not in related:
            related[a.article_id] = Related(a.article_id, a.title, a.published_on, a.url)
    return list(related.values())[:limit]


def citation(n: int, hit: Hit, start: int, end: int) -> Citation:
    a = hit.article
    return Citation(n=n, article_id=a.article_id, title=a.title, date=a.published_on, url=a.url,
                    categories=list(a.categories), passage=hit.chunk.text, quote=hit.chunk.text[start:end],
                    quote_start=start, quote_end=end, score=round(hit.score, 6), also_in=list(hit.also_in),
                    image=a.image)


def passage_citations(hits: list[Hit]) -> list[Citation]:
    """The passages as a generator sees them, numbered [1]..[n] and quoted whole (sent before an LLM streams)."""
    return [citation(n, hit, 0, len(hit.chunk.text)) for n, hit in enumerate(hits, 1)]


def compose(question: Question, hits: list[Hit], draft: Draft, generator: str, timings_ms: dict[str, float],
            nearby: list[Hit] | None = None) -> Answer:
    """The Answer: `draft`'s quotes index `hits`; related articles come from `nearby` (default: `hits`),
    so an abstention still lists the closest articles."""
    nearby = hits if nearby is None else nearby
    if draft.abstained or not draft.quotes:
        return Answer(question.text, ABSTAIN_TEXT, True, generator, [], related_articles(nearby, set()), timings_ms,
                      *_notice(draft), draft.repairs)
    citations = [citation(n, hits[q.hit], q.start, q.end) for n, q in enumerate(draft.quotes, 1)]
    cited = {c.article_id for c in citations}
    return Answer(question.text, draft.text, False, generator, citations, related_articles(nearby, cited),
                  timings_ms, *_notice(draft), draft.repairs, short_answer(question, citations))


def short_answer(question: Question, citations: list[Citation]) -> ShortAnswer | None:
    """The first span of an asked-for type (a date, a quantity, a name) in the quotes that the question
    does not already say: 「高さは634メートルで…」 answers 「スカイツリーの高さは？」 with 634メートル."""
    for kind in question.answer_types:
        if kind.span is None:
            continue
        for c in citations:
            for match in kind.span.finditer(c.quote):
                text = match.group().strip()
                if text and not question.says(text):
                    start = c.quote_start + match.start() + (len(match.group()) - len(match.group().lstrip()))
                    return ShortAnswer(text, c.n, start, start + len(text))
    return None


def _notice(draft: Draft) -> tuple[str | None, NoticeCode | None]:
    return (draft.notice.text, draft.notice.code) if draft.notice else (None, None)
