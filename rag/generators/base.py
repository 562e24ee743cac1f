"""The generator role: turn retrieved passages into answer text whose `[n]` markers point at quotes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rag.embeddings import Embedder
from rag.types import Hit


@dataclass(frozen=True)
class Evidence:
    question: str
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
    notice: str | None = None


@dataclass(frozen=True)
class GeneratorDeps:
    """What a generator may use: the embedder, a term weight (IDF over the index), its own options."""

    embedder: Embedder
    term_weight: Callable[[str], float]
    options: Mapping[str, object] = field(default_factory=dict)


class Generator(Protocol):
    name: str

    def generate(self, evidence: Evidence) -> Draft: ...
