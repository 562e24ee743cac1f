"""The default generator: answer with 1-3 sentences quoted verbatim from the retrieved passages.

Each candidate sentence of the top passages is scored on
- how much of the question's weighted vocabulary it covers (IDF weights from the index),
- its embedding similarity to the question (optional; the same model as retrieval),
- whether it carries what the question type asks for (a number, a date, a name, a reason),
- the rank of its passage.
"""

from __future__ import annotations

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

    passages: int = Field(4, ge=1, description="How many top passages supply candidate sentences.")
    max_sentences: int = Field(2, ge=1, description="Most sentences in an answer.")
    min_chars: int = Field(8, ge=0, description="Shorter fragments (headings, list stubs) are never the answer.")
    w_sentence: float = Field(1.0, description="Weight of the sentence's coverage of the question's terms.")
    w_passage: float = Field(0.3, description="Weight of the coverage by the sentence's whole passage (context).")
    w_similarity: float = Field(
        0.0, description="Weight of embedding similarity to the question (costs one model call per question).")
    w_type: float = Field(0.2, description="Weight of carrying the asked-for answer type (a number, a date, a name).")
    w_rank: float = Field(0.3, description="Weight of 1 / (1 + passage rank).")
    keep_ratio: float = Field(0.85, description="Further sentences are kept if they score this close to the best.")
    typed_ratio: float = Field(0.5, description="A sentence of the asked-for type joins if it scores this close.")


def is_aside(sentence: str, title: str) -> bool:
    """Not a statement that answers: a question or aside to the reader, a heading, the article's own title."""
    return speaks_to_reader(sentence) or is_heading(sentence) or name_key(sentence) == name_key(title)


class ExtractiveGenerator:
    name = "extractive"

    def __init__(self, embedder: Embedder, config: ExtractiveSettings):
        self.embedder, self.config = embedder, config

    def generate(self, evidence: Evidence) -> Draft:
        cfg, question = self.config, evidence.question
        wanted = question.answer_types
        candidates: list[tuple[int, int, int]] = []  # (hit, start, end)
        before: dict[tuple[int, int, int], tuple[int, int, int]] = {}  # a sentence -> the one before it
        features: list[tuple[float, float, float, float]] = []
        chatter: list[bool] = []
        for rank, hit in enumerate(evidence.hits[: cfg.passages]):
            text = hit.chunk.text
            passage_cov = question.coverage(said(text))
            title = hit.article.title
            spans = split_sentences(text)
            for (start, end), previous in zip(spans, [None, *spans]):
                sentence = text[start:end]
                if previous and not is_aside(text[previous[0]:previous[1]], title):
                    before[(rank, start, end)] = (rank, *previous)
                if len(sentence) < cfg.min_chars:
                    continue
                type_match = sum(question.carries(t, sentence) for t in wanted) / len(wanted) if wanted else 0.0
                candidates.append((rank, start, end))
                features.append((question.coverage(said(sentence)), passage_cov, type_match,
                                 1.0 / (1 + rank)))
                chatter.append(is_aside(sentence, title))
        # asides are no answer, unless nothing else is there to quote
        statements = [i for i, chatty in enumerate(chatter) if not chatty]
        if statements and len(statements) < len(candidates):
            candidates = [candidates[i] for i in statements]
            features = [features[i] for i in statements]
        if not candidates:
            return Draft("", abstained=True)
        f = np.array(features)
        scores = cfg.w_sentence * f[:, 0] + cfg.w_passage * f[:, 1] + cfg.w_type * f[:, 2] + cfg.w_rank * f[:, 3]
        if cfg.w_similarity and evidence.query_vector is not None:
            sentences = [evidence.hits[h].chunk.text[s:e] for h, s, e in candidates]
            scores = scores + cfg.w_similarity * (self.embedder.encode_passages(sentences) @ evidence.query_vector)
        order = [int(i) for i in np.argsort(-scores)]
        best = scores[order[0]]
        chosen = [order[0]] + [i for i in order[1 : cfg.max_sentences] if scores[i] >= cfg.keep_ratio * best]
        # The best match often restates the question (「スカイツリーは電波塔です」) while a neighbour
        # carries the asked-for number, date or name with its topic left unsaid (「高さは634メートルで」):
        # make room for the best sentence that does, from the best sentence's own passage first.
        if wanted and not any(f[i, 2] == 1.0 for i in chosen):
            best_passage = candidates[order[0]][0]
            typed = min((i for i in order if f[i, 2] == 1.0 and scores[i] >= cfg.typed_ratio * best),
                        key=lambda i: (candidates[i][0] != best_passage, -scores[i]), default=None)
            if typed is not None:
                chosen = chosen[: cfg.max_sentences - 1] + [typed]
        spans = [candidates[i] for i in chosen]
        # a chosen sentence that points back (「このプロジェクトは…」) is read with the sentence it points to
        spans += [b for span in spans
                  if refers_back(evidence.hits[span[0]].chunk.text[span[1]:span[2]])
                  and (b := before.get(span)) and b not in spans]
        # read in passage order: best passage first, sentences in their text order
        quotes = [Quote(*span) for span in sorted(set(spans))]
        text = "".join(f"{evidence.hits[q.hit].chunk.text[q.start:q.end]}[{n}]" for n, q in enumerate(quotes, 1))
        return Draft(text, quotes)


@register("extractive", settings=ExtractiveSettings)
def _create(deps: GeneratorDeps) -> ExtractiveGenerator:
    return ExtractiveGenerator(deps.embedder, deps.settings)
