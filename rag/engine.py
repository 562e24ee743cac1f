"""The engine: one object that owns the model, the index store, the retriever and the generators.

The CLI, the HTTP service and the evaluation all drive this same object. A question flows one way:
analyse (rag.question) -> retrieve (rag.retrieval over the store) -> check the evidence (rag.evidence)
-> generate (rag.generators) -> compose the Answer (rag.answer).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from rag import parts
from rag.answer import compose, marker_pieces, passage_citations, related_articles
from rag.embeddings import Embedder
from rag.errors import InvalidQuestion, UnknownGenerator
from rag.evidence import EvidenceCheck
from rag.generators import CheckedGenerator, Draft, Evidence, Generator, StreamingGenerator, available
from rag.question import Question, analyse
from rag.retrieval import Mode, RetrievalResult, Retriever
from rag.settings import Settings
from rag.types import Answer, Article, Citation, Facets, Filters, Hit, Related

MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str
    articles: tuple[str, ...] = ()  # an assistant turn: the articles its answer cited


@dataclass
class AskOptions:
    k: int | None = None
    filters: Filters = Filters()
    generator: str | None = None
    mode: Mode | None = None
    history: tuple[Turn, ...] = ()  # earlier turns of the conversation, oldest first
    article: str | None = None  # the article the reader is on (the widget on a post page): its passages first


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


def previous_question(history: tuple[Turn, ...]) -> str | None:
    """The user's previous question: follow-ups rarely name their topic, so retrieval searches with it too.

    After 「韓国のAIインフラ投資について教えて」, both 「NVIDIAは何基のGPUを供給する？」 and
    「それはいつ発表された？」 must search Korean AI infrastructure. A follow-up that names something new
    which only a search of its own finds (a new topic) is searched alone (`Engine.search`).
    """
    previous = [t.content.strip() for t in history if t.role == "user" and t.content.strip()]
    return previous[-1] if previous else None


def previous_articles(history: tuple[Turn, ...]) -> tuple[str, ...]:
    """The articles the previous answer cited: a follow-up is about them, even one that names nothing."""
    answers = [t for t in history if t.role == "assistant"]
    return answers[-1].articles if answers else ()


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why `text` is not text that can be analysed and sent back (a lone surrogate), or None."""
    found = _LONE_SURROGATE.search(text)
    if found is None:
        return None
    return (f"not valid Unicode: lone surrogate U+{ord(found.group()):04X} at character {found.start() + 1} "
            f"(invalid UTF-8, or a \\u escape without its pair)")


def validate_text(text: str, what: str) -> None:
    if problem := text_problem(text):
        raise InvalidQuestion(f"{what} is {problem}")


def validate_question(question: str) -> str:
    validate_text(question, "the question")
    question = question.strip()
    if not question:
        raise InvalidQuestion("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidQuestion(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return question


class Engine:
    def __init__(self, settings: Settings, embedder: Embedder | None = None):
        """Load the model (unless given one already loaded) and open the index store named by the settings."""
        self.settings = parts.checked(settings)
        self.embedder = embedder or parts.embedder(settings)
        self.store = parts.open_store(settings, self.embedder)
        self.retriever = Retriever(self.store, self.embedder, parts.retrieval_config(settings))
        self.evidence = EvidenceCheck(settings.abstain_below, settings.subject_check)
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()

    # -- generators

    def generator(self, name: str | None = None) -> Generator:
        name = name or self.settings.generator
        with self._lock:
            if name not in self._generators:
                self._generators[name] = parts.generator(self.settings, name, self.embedder)
            return self._generators[name]

    @property
    def default_generator(self) -> str:
        return self.settings.generator

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

    # -- asking

    def analyse(self, text: str, history: tuple[Turn, ...] = (), article: str | None = None) -> Question:
        """The question, about the articles the previous answer cited, or else the article the reader is on."""
        about = previous_articles(history) or ((article,) if article else ())
        return analyse(text, self.store.term_weight, previous_question(history), about)

    def ask(self, question: str, options: AskOptions = AskOptions()) -> Answer:
        started = time.perf_counter()
        analysed, result = self._retrieve(question, options)
        answer = self.answer(analysed, result, options.generator, options.k)
        answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)
        return answer

    def ask_stream(self, question: str, options: AskOptions = AskOptions()) -> AnswerStream:
        """Like `ask`, for a streaming reply: a token-streaming generator's text passes through as it comes."""
        started = time.perf_counter()
        analysed, result = self._retrieve(question, options)
        generator = self.generator(options.generator)
        k = options.k or self.settings.k
        hits = self.evidence.citable(analysed, result.hits, k)
        if not isinstance(generator, StreamingGenerator) or self._withheld(analysed, result, hits):
            answer = self.answer(analysed, result, options.generator, k)
            answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)
            return AnswerStream(answer.citations, answer.related, marker_pieces(answer.answer), answer)
        streamed = AnswerStream(passage_citations(hits), related_articles(result.hits[:k], set()), iter(()))

        def pieces() -> Iterator[str]:
            composing = time.perf_counter()
            drafts = generator.stream(Evidence(analysed, hits, result.query_vector))
            yield from drafts
            draft = drafts.draft
            streamed.answer = compose(analysed, hits, draft, draft.generator or generator.name,
                                      self._timings(result, composing), nearby=result.hits[:k])
            streamed.answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 2)

        streamed.pieces = pieces()
        return streamed

    def retrieve(self, question: Question, k: int | None = None, filters: Filters = Filters(),
                 mode: Mode | None = None, query_vector: np.ndarray | None = None) -> RetrievalResult:
        """The top passages for the question's query, as they are (no follow-up handling)."""
        return self.retriever.search(question, k or self.settings.k, filters, mode, query_vector)

    def search(self, question: Question, options: AskOptions = AskOptions(),
               query_vector: np.ndarray | None = None) -> tuple[Question, RetrievalResult]:
        """Retrieve for an analysed question. A follow-up is searched with its conversation's previous question,
        unless it names something new that only a search of its own finds (a new topic).
        `query_vector`: the embedding of `question.query.text`, if known."""
        # deeper than the passages shown: the subject check may pass over the first ones
        depth = max(options.k or self.settings.k, self.settings.cite_depth)
        result = self.retrieve(question, depth, options.filters, options.mode, query_vector)
        if question.follows_up and question.new_subjects and not self.evidence.citable(question, result.hits, 1):
            # it names something new that the conversation's passages do not: a new topic, if alone they do
            alone = question.alone()
            found = self.retrieve(alone, depth, options.filters, options.mode)
            if self.evidence.citable(alone, found.hits, 1):
                return alone, found
        return question, result

    def _retrieve(self, question: str, options: AskOptions) -> tuple[Question, RetrievalResult]:
        question = validate_question(question)
        for number, turn in enumerate(options.history, 1):
            validate_text(turn.content, f"history turn {number}")
        analysed = self.analyse(question, options.history, options.article)
        self.generator(options.generator)  # an unknown generator fails before any work
        return self.search(analysed, options)

    def _withheld(self, question: Question, result: RetrievalResult, citable: list[Hit]) -> Draft | None:
        """The abstention decided before any generator runs: nothing found, or passages that miss the question."""
        if not result.hits:
            return Draft("", abstained=True, notice=result.notice)
        if not self.evidence.sufficient(question, citable):
            return Draft("", abstained=True)
        return None

    @staticmethod
    def _timings(result: RetrievalResult, composing: float) -> dict[str, float]:
        timings = {"embed": result.embed_ms, "search": result.search_ms,
                   "compose": (time.perf_counter() - composing) * 1000}
        return {k: round(v, 2) for k, v in timings.items()}

    def answer(self, question: Question, result: RetrievalResult, generator_name: str | None = None,
               k: int | None = None) -> Answer:
        """Compose the answer from the first `k` citable passages, abstaining when they miss the question;
        the first `k` passages of all are the related articles."""
        generator = self.generator(generator_name)
        composing = time.perf_counter()
        k = k or self.settings.k
        citable = self.evidence.citable(question, result.hits, k)
        draft = (self._withheld(question, result, citable)
                 or generator.generate(Evidence(question, citable, result.query_vector)))
        return compose(question, citable, draft, draft.generator or generator.name,
                       self._timings(result, composing), nearby=result.hits[:k])

    # -- the index, for the service's pages and probes

    def facets(self) -> Facets:
        return self.store.facets()

    def article(self, article_id: str) -> Article | None:
        return self.store.article(article_id)

    def describe(self) -> dict:
        """The index summary a readiness probe shows."""
        manifest = self.store.manifest
        passages = manifest.counts.distinct_texts
        return {"generation": self.generation, "model": manifest.model.id, "backend": manifest.model.backend,
                "query_backend": self.embedder.backend,  # what embeds questions here (same vector space)
                "counts": asdict(manifest.counts), "created_at": manifest.created_at, "search": self.search_mode,
                "vectors": {"done": passages - manifest.dense.missing, "total": passages}}

    @property
    def search_mode(self) -> str:
        """How questions are searched: the configured mode, or bm25 while the index is terms-only."""
        return self.settings.retriever if self.store.manifest.has_vectors else "bm25"

    @property
    def generation(self) -> str:
        return self.store.generation

    def reopened(self) -> "Engine":
        """A new engine on the index's live generation, sharing this one's loaded model (for hot reload)."""
        return Engine(self.settings, self.embedder)

    def close(self) -> None:
        self.store.close()
