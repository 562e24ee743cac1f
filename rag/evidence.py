"""The evidence check: whether the retrieved passages name what the question names.

Dense similarity barely separates answerable from unanswerable questions; what a passage names does.
Three checks, all decided before any generator runs:
- the subject check: a passage (or its article's title) that may be cited names every named thing
  the question asks about (companies, products, models, people, places; `japanese.names`),
  in either script (Microsoft / マイクロソフト) and width (ＧＰＴ－６ / GPT-6). A follow-up that names
  nothing new keeps its conversation's topic: its passages name one of the previous question's names or
  come from the articles the previous answer cited (or the post the reader is on), those first;
- the type check: a question asking when or how much has a citable passage that carries a date or a
  quantity (「GPT-6はいつ発売される？」 is not answered by a passage that only names GPT-6);
- coverage: a top passage contains enough of the question's IDF-weighted terms.
Passages that fail the subject check are never quoted; when none passes, the answer abstains and lists
the closest articles. The same checks tell whether a follow-up left its conversation's topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.japanese import said
from rag.question import Question, counted_in
from rag.types import Hit


def evidence_strength(question: Question, hits: list[Hit], top: int = 3) -> float:
    """The best share of the question's weighted terms that one of the top passages (with its title) contains."""
    return max((question.coverage(said(h.chunk.text + "\n" + h.article.title)) for h in hits[:top]),
               default=0.0)


def names_subjects(question: Question, hit: Hit) -> bool:
    """The passage or its title names the question's new named things, or (a follow-up) its topic."""
    spelled = said(hit.chunk.text + "\n" + hit.article.title).names
    if question.new_subjects:
        return all(name in spelled for name in question.new_subjects)
    return not question.topic or any(name in spelled for name in question.topic)


def keeps_topic(question: Question, hits: list[Hit]) -> list[Hit]:
    """A follow-up's passages from the articles that name its topic somewhere among the hits, or that the
    previous answer cited: the conversation's article answers 「何日間？」 in a paragraph that does not
    repeat the company's name. The cited articles' passages come first."""
    on_topic = {h.article.article_id for h in hits if names_subjects(question, h)} | set(question.cited)
    return prefer_cited(question, [h for h in hits if h.article.article_id in on_topic])


def prefer_cited(question: Question, hits: list[Hit]) -> list[Hit]:
    """The passages of the cited articles (the previous answer's, or the reader's post) first, each group in
    rank order."""
    cited = set(question.cited)
    return sorted(hits, key=lambda h: h.article.article_id not in cited)


def carries_asked_types(question: Question, hits: list[Hit]) -> bool:
    """Every asked-for date or quantity appears in some passage (names and reasons take too many forms),
    counted in the asked-for unit where the question names one (何回 wants a number of 回)."""
    checked = [t.contains for t in question.answer_types if t.name in ("date", "duration", "quantity")]
    if question.counter:
        checked.append(counted_in(question.counter))
    return all(any(pattern.search(h.chunk.text) for h in hits) for pattern in checked)


@dataclass(frozen=True)
class EvidenceCheck:
    abstain_below: float  # RAG_ABSTAIN_BELOW
    subject_check: bool  # RAG_SUBJECT_CHECK

    def citable(self, question: Question, hits: list[Hit], limit: int | None = None) -> list[Hit]:
        """The first `limit` (default all) hits an answer may quote, best first: those that name what the
        question names. Each check analyses a passage (about 1 ms): they stop at the `limit`th citable one."""
        if not self.subject_check:
            return hits[:limit]
        if (question.topic or question.cited) and not question.new_subjects:
            return keeps_topic(question, hits)[:limit]
        found = []
        for hit in hits:
            if len(found) == limit:
                break
            if names_subjects(question, hit):
                found.append(hit)
        return found

    def sufficient(self, question: Question, citable: list[Hit]) -> bool:
        """Whether the citable hits carry what is asked for and cover enough of the question to answer it."""
        return (bool(citable) and carries_asked_types(question, citable)
                and evidence_strength(question, citable) >= self.abstain_below)
