"""The evidence check: whether the retrieved passages name what the question names.

Dense similarity barely separates answerable from unanswerable questions; whether a top passage
contains the question's IDF-weighted terms (a company, a product, a figure) does. The same measure
decides two things before any generator runs: abstaining, and whether a follow-up left its
conversation's topic (the context found nothing for it).
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.japanese import tokenize
from rag.question import Question
from rag.types import Hit


def evidence_strength(question: Question, hits: list[Hit], top: int = 3) -> float:
    """The best share of the question's weighted terms that one of the top passages (with its title) contains."""
    return max((question.coverage(set(tokenize(h.chunk.text + "\n" + h.article.title))) for h in hits[:top]),
               default=0.0)


@dataclass(frozen=True)
class EvidenceCheck:
    abstain_below: float  # RAG_ABSTAIN_BELOW

    def sufficient(self, question: Question, hits: list[Hit]) -> bool:
        return bool(hits) and evidence_strength(question, hits) >= self.abstain_below
