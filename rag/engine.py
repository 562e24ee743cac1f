"""The engine: one object that owns the model, the index, the retriever and the generators.

The CLI, the HTTP service and the evaluation all drive this same object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rag.answer import compose, evidence_strength, marker_pieces, passage_citations, related_articles
from rag.embeddings import Embedder, create_embedder
from rag.errors import InvalidQuestion, UnknownGenerator
from rag.generators import (CheckedGenerator, Draft, Evidence, Generator, GeneratorDeps, StreamingGenerator,
                            available, create_generator)
from rag.index import Index
from rag.retrieval import Mode, RetrievalConfig, RetrievalResult, Retriever
from rag.settings import Settings
from rag.types import Answer, Article, Citation, Facets, Filters, Related

MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str


@dataclass
class AskOptions:
    k: int | None = None
    filters: Filters = Filters()
    generator: str | None = None
    mode: Mode | None = None
    history: tuple[Turn, ...] = ()  # earlier turns of the conversation, oldest first


@dataclass
class AnswerStream:
    """An answer in delivery order: `sources` (what `[n]` may point to), then text `pieces`.

    `answer` is set once the pieces run out; it is authoritative (a generated answer's markers are
    checked and renumbered, and a failed backend's text replaced by the extractive fallback).
    """

    sources: list[Citation]
    related: list[Related]
    pieces: Iterator[str]
    answer: Answer | None = None


def retrieval_query(question: str, history: tuple[Turn, ...]) -> str:
    """The text to retrieve with: in a conversation, the user's previous question joined with this one.

    Follow-ups rarely name their topic: after 「韓国のAIインフラ投資について教えて」, both
    「NVIDIAは何基のGPUを供給する？」 and 「それはいつ発表された？」 must search Korean AI infrastructure.
    When the joined search finds nothing for the new question (a new topic), `ask` searches with the
    question alone. The answer's sentences are chosen for the new question alone.
    """
    previous = [t.content.strip() for t in history if t.role == "user" and t.content.strip()]
    return f"{previous[-1]} {question}" if previous else question


def validate_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise InvalidQuestion("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidQuestion(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return question


class Engine:
    def __init__(self, settings: Settings, embedder: Embedder | None = None):
        """Load the model (unless given one already loaded) and open the index named by the settings."""
        self.settings = settings
        self.embedder = embedder or create_embedder(
            settings.embedding_backend, settings.model, query_prompt=settings.query_prompt,
            passage_prompt=settings.passage_prompt, batch_size=settings.embed_batch_size)
        self.index = Index.open(settings.index, self.embedder)
        self.retriever = Retriever(self.index, self.embedder, RetrievalConfig(
            mode=Mode.parse(settings.retriever), fusion=settings.fusion, dense_weight=settings.dense_weight,
            candidates=settings.candidates, recurrence_penalty=settings.recurrence_penalty,
            date_boost=settings.date_boost, dense_slot=settings.dense_slot))
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()

    def generator(self, name: str | None = None) -> Generator:
        name = name or self.settings.generator
        with self._lock:
            if name not in self._generators:
                deps = GeneratorDeps(self.embedder, self.retriever.term_weight, self.settings)
                self._generators[name] = create_generator(name, deps)
            return self._generators[name]

    def configured_generators(self) -> list[str]:
        """The registered generators whose settings are complete (the page offers these)."""
        names = []
        for name in available():
            try:
                self.generator(name)
            except UnknownGenerator:
                continue
            names.append(name)
        return names

    def generator_health(self) -> dict[str, dict]:
        return {name: (g.health() if isinstance(g := self.generator(name), CheckedGenerator) else {"reachable": True})
                for name in self.configured_generators()}

    def ask(self, question: str, options: AskOptions = AskOptions()) -> Answer:
        started = time.perf_counter()
        question, result = self._retrieve(question, options)
        answer = self.answer(question, result, options.generator)
        answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)
        return answer

    def ask_stream(self, question: str, options: AskOptions = AskOptions()) -> AnswerStream:
        """Like `ask`, for a streaming reply: a token-streaming generator's text passes through as it comes."""
        started = time.perf_counter()
        question, result = self._retrieve(question, options)
        generator = self.generator(options.generator)
        if not isinstance(generator, StreamingGenerator) or self._withheld(question, result):
            answer = self.answer(question, result, options.generator)
            answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)
            return AnswerStream(answer.citations, answer.related, marker_pieces(answer.answer), answer)
        hits = result.hits
        streamed = AnswerStream(passage_citations(hits), related_articles(hits, set()), iter(()))

        def pieces() -> Iterator[str]:
            composing = time.perf_counter()
            drafts = generator.stream(Evidence(question, hits, result.query_vector))
            yield from drafts
            draft = drafts.draft
            streamed.answer = compose(question, hits, draft, draft.generator or generator.name,
                                      self._timings(result, composing))
            streamed.answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)

        streamed.pieces = pieces()
        return streamed

    def _retrieve(self, question: str, options: AskOptions) -> tuple[str, RetrievalResult]:
        question = validate_question(question)
        self.generator(options.generator)  # an unknown generator fails before any work
        k = options.k or self.settings.k
        query = retrieval_query(question, options.history)
        result = self.retriever.search(query, k, options.filters, options.mode)
        if query != question and self._evidence(question, result) < self.settings.abstain_below:
            # a new topic: the conversation's context found nothing for this question
            result = self.retriever.search(question, k, options.filters, options.mode)
        return question, result

    def _evidence(self, question: str, result: RetrievalResult) -> float:
        return evidence_strength(question, result.hits, self.retriever.term_weight)

    def _withheld(self, question: str, result: RetrievalResult) -> Draft | None:
        """The abstention decided before any generator runs: nothing found, or passages that miss the question."""
        if not result.hits:
            return Draft("", abstained=True, notice=result.notice)
        if self._evidence(question, result) < self.settings.abstain_below:
            return Draft("", abstained=True)
        return None

    @staticmethod
    def _timings(result: RetrievalResult, composing: float) -> dict[str, float]:
        timings = {"embed": result.embed_ms, "search": result.search_ms,
                   "compose": (time.perf_counter() - composing) * 1000}
        return {k: round(v, 2) for k, v in timings.items()}

    def answer(self, question: str, result: RetrievalResult, generator_name: str | None = None) -> Answer:
        """Compose the answer from retrieved passages, abstaining when they do not name the question's terms."""
        generator = self.generator(generator_name)
        composing = time.perf_counter()
        draft = self._withheld(question, result) or generator.generate(
            Evidence(question, result.hits, result.query_vector))
        return compose(question, result.hits, draft, draft.generator or generator.name,
                       self._timings(result, composing))

    def reopened(self) -> "Engine":
        """A new engine on the index's live generation, sharing this one's loaded model (for hot reload)."""
        return Engine(self.settings, self.embedder)

    @property
    def generation(self) -> str:
        return self.index.path.name

    @property
    def default_generator(self) -> str:
        return self.settings.generator

    def facets(self) -> Facets:
        span = self.retriever.date_range()
        return Facets(self.retriever.categories(), span[0] if span else None, span[1] if span else None)

    def article(self, article_id: str) -> Article | None:
        return self.index.article(article_id)

    def describe(self) -> dict:
        """The index summary a readiness probe shows."""
        manifest = self.index.manifest
        return {"generation": self.generation, "model": manifest["model"]["id"],
                "backend": manifest["model"].get("backend"), "counts": manifest["counts"],
                "created_at": manifest["created_at"]}

    def close(self) -> None:
        self.index.close()

