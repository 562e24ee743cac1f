"""The default generator: answer with 1-3 sentences quoted verbatim from the retrieved passages.

Each candidate sentence of the top passages is scored on
- how much of the question's weighted vocabulary it covers (IDF weights from the index),
- its embedding similarity to the question (optional; the same model as retrieval),
- whether it carries what the question type asks for (a number, a date, a name, a reason) that the
  question does not already say,
- the rank of its passage.
Asides (questions to the reader, headings, the title line) are quoted only when nothing else is there; a
chosen sentence that points back (「このプロジェクトは…」) is quoted with the sentence before it. The same
scores cut the passages down to excerpts for an LLM (`excerpts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from rag.chunking import split_sentences
from rag.embeddings import Embedder
from rag.generators.base import Draft, Evidence, GeneratorDeps, GeneratorSettings, Quote
from rag.generators.registry import register
from rag.japanese import is_heading, name_key, refers_back, said, speaks_to_reader


class ExtractiveSettings(GeneratorSettings):
    """How sentences are chosen; the weights were set by measurement on the dev sets (see the README)."""

    model_config = SettingsConfigDict(env_prefix="RAG_EXTRACTIVE_", extra="forbid")

    passages: int = Field(3, ge=1, description="How many top passages supply candidate sentences.")
    max_sentences: int = Field(3, ge=1, description="Most sentences in an answer.")
    min_chars: int = Field(8, ge=0, description="Shorter fragments (headings, list stubs) are never the answer.")
    w_sentence: float = Field(1.0, description="Weight of the sentence's coverage of the question's terms.")
    w_passage: float = Field(0.3, description="Weight of the coverage by the sentence's whole passage (context).")
    w_similarity: float = Field(
        0.0, description="Weight of embedding similarity to the question (costs one model call per question).")
    w_type: float = Field(0.2, description="Weight of carrying the asked-for answer type (a number, a date, a name).")
    w_rank: float = Field(0.3, description="Weight of 1 / (1 + passage rank).")
    keep_ratio: float = Field(0.75, description="Further sentences are kept if they score this close to the best.")
    typed_ratio: float = Field(0.5, description="A sentence of the asked-for type joins if it scores this close.")


def is_aside(sentence: str, title: str) -> bool:
    """Not a statement that answers: a question or aside to the reader, a heading, the article's own title."""
    return speaks_to_reader(sentence) or is_heading(sentence) or name_key(sentence) == name_key(title)


@dataclass(frozen=True)
class Sentence:
    """A candidate sentence: `hits[hit].chunk.text[start:end]`, scored against the question."""

    hit: int
    start: int
    end: int
    score: float
    typed: bool  # carries every answer type the question asks for
    before: tuple[int, int] | None  # the statement before it in its passage, if any


def score_sentences(evidence: Evidence, cfg: ExtractiveSettings, embedder: Embedder | None,
                    passages: int) -> list[Sentence]:
    """The sentences of the first `passages` hits, best first; asides only when nothing else is there."""
    question = evidence.question
    wanted = question.answer_types
    found: list[tuple[int, int, int, tuple[int, int] | None, bool]] = []  # hit, start, end, before, aside
    features: list[tuple[float, float, float, float]] = []
    for rank, hit in enumerate(evidence.hits[:passages]):
        text, title = hit.chunk.text, hit.article.title
        passage_cov = question.coverage(said(text))
        spans = split_sentences(text)
        for (start, end), previous in zip(spans, [None, *spans]):
            sentence = text[start:end]
            if len(sentence) < cfg.min_chars:
                continue
            before = previous if previous and not is_aside(text[previous[0]:previous[1]], title) else None
            type_match = sum(question.carries(t, sentence) for t in wanted) / len(wanted) if wanted else 0.0
            found.append((rank, start, end, before, is_aside(sentence, title)))
            features.append((question.coverage(said(sentence)), passage_cov, type_match, 1.0 / (1 + rank)))
    # asides are no answer, unless nothing else is there to quote
    if not all(aside for *_, aside in found):
        keep = [i for i, (*_, aside) in enumerate(found) if not aside]
        found, features = [found[i] for i in keep], [features[i] for i in keep]
    if not found:
        return []
    f = np.array(features)
    scores = cfg.w_sentence * f[:, 0] + cfg.w_passage * f[:, 1] + cfg.w_type * f[:, 2] + cfg.w_rank * f[:, 3]
    if cfg.w_similarity and embedder is not None and evidence.query_vector is not None:
        texts = [evidence.hits[h].chunk.text[s:e] for h, s, e, *_ in found]
        scores = scores + cfg.w_similarity * (embedder.encode_passages(texts) @ evidence.query_vector)
    ranked = [Sentence(h, s, e, float(scores[i]), bool(f[i, 2] == 1.0), before)
              for i, (h, s, e, before, _) in enumerate(found)]
    return sorted(ranked, key=lambda x: -x.score)


def excerpts(evidence: Evidence, cfg: ExtractiveSettings, sentences: int) -> dict[int, str]:
    """What an LLM needs to answer, in a fraction of the passages' length: the `sentences` best sentences
    of all hits, each with the sentence on either side, by hit index (hits without one are left out),
    in text order; "…" marks what was left out."""
    best: dict[int, list[Sentence]] = {}
    for sentence in score_sentences(evidence, cfg, None, len(evidence.hits))[:sentences]:
        best.setdefault(sentence.hit, []).append(sentence)
    cut = {}
    for n in sorted(best):
        text = evidence.hits[n].chunk.text
        spans = split_sentences(text)
        index = {start: i for i, (start, _) in enumerate(spans)}
        keep = sorted({j for s in best[n] for j in range(index[s.start] - 1, index[s.start] + 2)
                       if 0 <= j < len(spans)})
        runs: list[list[int]] = []  # consecutive kept sentences are copied with the text between them
        for i in keep:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        pieces = [text[spans[run[0]][0] : spans[run[-1]][1]] for run in runs]
        cut[n] = ("…" if keep[0] > 0 else "") + "…".join(pieces) + ("…" if keep[-1] < len(spans) - 1 else "")
    return cut


class ExtractiveGenerator:
    name = "extractive"

    def __init__(self, embedder: Embedder, config: ExtractiveSettings):
        self.embedder, self.config = embedder, config

    def generate(self, evidence: Evidence) -> Draft:
        cfg = self.config
        ranked = score_sentences(evidence, cfg, self.embedder, cfg.passages)
        if not ranked:
            return Draft("", abstained=True)
        best = ranked[0].score
        chosen = ranked[:1] + [s for s in ranked[1 : cfg.max_sentences] if s.score >= cfg.keep_ratio * best]
        # The best match often restates the question (「スカイツリーは電波塔です」) while a neighbour
        # carries the asked-for number, date or name with its topic left unsaid (「高さは634メートルで」):
        # make room for the best sentence that does, from the best sentence's own passage first.
        if evidence.question.answer_types and not any(s.typed for s in chosen):
            typed = min((s for s in ranked if s.typed and s.score >= cfg.typed_ratio * best),
                        key=lambda s: (s.hit != ranked[0].hit, -s.score), default=None)
            if typed is not None:
                chosen = chosen[: cfg.max_sentences - 1] + [typed]
        spans = {(s.hit, s.start, s.end) for s in chosen}
        # a chosen sentence that points back (「このプロジェクトは…」) is read with the sentence it points to
        spans |= {(s.hit, *s.before) for s in chosen
                  if s.before and refers_back(evidence.hits[s.hit].chunk.text[s.start:s.end])}
        # read in passage order: best passage first, sentences in their text order
        quotes = [Quote(*span) for span in sorted(spans)]
        text = "".join(f"{evidence.hits[q.hit].chunk.text[q.start:q.end]}[{n}]" for n, q in enumerate(quotes, 1))
        return Draft(text, quotes)


@register("extractive", settings=ExtractiveSettings)
def _create(deps: GeneratorDeps) -> ExtractiveGenerator:
    return ExtractiveGenerator(deps.embedder, deps.settings)
