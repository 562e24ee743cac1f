"""The generator role: turn retrieved passages into answer text whose `[n]` markers point at quotes."""

from __future__ import annotations

from collections.abc import Generator as PyGenerator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic_settings import BaseSettings

from rag.embeddings import Embedder
from rag.question import Question
from rag.types import Hit, Notice

# What every generator says when the passages do not answer (and what an LLM is told to say then).
ABSTAIN_TEXT = "記事の中に、この質問に答える情報は見つかりませんでした。"


class GeneratorSettings(BaseSettings):
    """A generator's own settings, declared beside its code: `RAG_<PREFIX>_*` variables, or keyword overrides.

    Subclasses set `model_config = SettingsConfigDict(env_prefix="RAG_<PREFIX>_", extra="forbid")`.
    """


@dataclass(frozen=True)
class Evidence:
    question: Question
    hits: list[Hit]  # best first
    query_vector: np.ndarray | None = None


@dataclass(frozen=True)
class Quote:
    """A span of `hits[hit].chunk.text`; marker [n] in the draft text refers to the n-th quote."""

    hit: int
    start: int
    end: int


@dataclass
class Draft:
    text: str
    quotes: list[Quote] = field(default_factory=list)
    abstained: bool = False
    notice: Notice | None = None
    generator: str | None = None  # who wrote it, when not the generator asked (a fallback)
    repairs: list[str] = field(default_factory=list)  # what the citation check changed


@dataclass(frozen=True)
class GeneratorDeps:
    """What a generator may use: the loaded embedder, its own settings (None if it declares none), and the
    prefixed keyword settings of all generators (to build another one, as a fallback, the same way)."""

    embedder: Embedder
    settings: GeneratorSettings | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)


class Generator(Protocol):
    name: str

    def generate(self, evidence: Evidence) -> Draft: ...


class DraftStream(Iterator[str]):
    """Answer text in pieces as a generator produces them; `draft` is set once the pieces run out.

    Wraps a Python generator that yields the pieces and returns the checked Draft.
    """

    def __init__(self, source: PyGenerator[str, None, Draft]):
        self._source = source
        self.draft: Draft | None = None

    def __next__(self) -> str:
        try:
            return next(self._source)
        except StopIteration as stop:
            self.draft = stop.value
            raise

    def close(self) -> None:
        self._source.close()


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    def stream(self, evidence: Evidence) -> DraftStream: ...


@runtime_checkable
class CheckedGenerator(Generator, Protocol):
    def health(self) -> dict: ...  # {"reachable": bool, ...}: for /readyz
