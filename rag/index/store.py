"""The seam every index store implements: search with filters, lookups, and writes by article.

Retrieval talks to an `IndexStore` only; `build_index` talks to an `IndexWriter` only. The folder store
(FAISS + bm25s + SQLite, `rag/index/folder.py`) is the first implementation; a store on a distributed
engine implements the same two protocols. The unit of search is a distinct passage text (`text_id`):
boilerplate and syndicated paragraphs recur across articles and are stored, embedded and ranked once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Protocol, TypeVar

import numpy as np

from rag.embeddings import Embedder
from rag.index.manifest import Manifest
from rag.types import Article, Chunk, Facets, Filters


@dataclass(frozen=True)
class Passage:
    """A distinct passage as cited: its first occurrence passing the filters, and the other articles with it."""

    text_id: int
    chunk: Chunk
    article: Article
    also_in: tuple[str, ...]
    n_articles: int  # every article carrying this exact text, filtered or not


Holder = TypeVar("Holder")  # however a store names the articles holding a passage


def citing(owners: Sequence[Holder], admitted: Callable[[Holder], bool]) -> tuple[Holder, list[Holder]]:
    """The article a passage is cited from (the first of its articles, in article order, passing the filters)
    and the others passing them (`also_in`); every store groups a passage's articles by this rule."""
    passing = [o for o in owners if admitted(o)]
    return passing[0], passing[1:]


class IndexStore(Protocol):
    """The read side: what retrieval, the answer and the pages ask of an index."""

    manifest: Manifest
    generation: str  # the name of the version being read; a new one means an update went live

    def dense_search(self, vector: np.ndarray, depth: int, filters: Filters) -> dict[int, float]:
        """text_id -> cosine similarity of the `depth` nearest passages of articles passing `filters`."""

    def term_search(self, terms: Sequence[str], depth: int, filters: Filters) -> dict[int, float]:
        """text_id -> BM25 score (> 0) of the `depth` best passages for the analysed `terms`."""

    def term_weight(self, term: str) -> float:
        """IDF of a term over the passages; a term the corpus never uses weighs most."""

    def matches_any(self, filters: Filters) -> bool:
        """Whether any article passes the filters."""

    def passage(self, text_id: int, filters: Filters) -> Passage: ...

    def passages(self, text_ids: Sequence[int], filters: Filters) -> list[Passage]:
        """`passage` of each, in order (a remote store reads them in one or two requests)."""

    def recurrence(self, text_id: int) -> int:
        """How many articles carry this exact passage (boilerplate recurs in hundreds)."""

    def passage_dates(self, text_id: int) -> list[date]:
        """The dates of every article carrying the passage (the date intent weighs them)."""

    def newest_date(self) -> date | None: ...

    def facets(self) -> Facets: ...

    def article(self, article_id: str) -> Article | None: ...

    def chunks_of_article(self, article_id: str) -> list[Chunk]: ...

    def close(self) -> None: ...


class IndexWriter(Protocol):
    """The write side: add, replace and delete whole articles, then make the result live at once.

    Nothing a writer does is visible to readers before `commit`; a writer dropped before it (an error, an
    interrupt) leaves the live index as it was.
    """

    files: dict[str, str]  # corpus path -> content hash of what the live index holds (empty on a rebuild)
    # Whether a long build should first commit a terms-only generation, which answers by BM25 while the model
    # embeds: the folder store says so while no index with every vector is live (one that is keeps serving).
    terms_first: bool

    def previous_chunks(self, article: Article, chunker: dict) -> list[Chunk] | None:
        """The live index's chunks of `article` when its file, cleaned body and chunker are unchanged."""

    def known_vector(self, text_hash: str) -> np.ndarray | None:
        """The stored vector of a passage text, so an update embeds only what is new, and a build that was
        interrupted resumes where it stopped."""

    def put(self, article: Article, chunks: list[Chunk]) -> None:
        """Add the article, or replace the one with its id."""

    def delete(self, article_id: str) -> None: ...

    def put_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        """Vectors of new passage texts, by text hash. The folder store keeps them on disk at once, so that an
        interrupted build resumes without embedding them again."""

    def record_progress(self, progress: "BuildProgress") -> None:
        """Tell readers how far the build is (the service shows it); gone when the writer closes."""

    def commit(self, description: "Description") -> Manifest:
        """Write everything and make it live atomically; returns the new version's manifest. Passages without
        a vector yet are committed too: such a generation answers by its terms alone (`Manifest.has_vectors`)."""

    def close(self) -> None:
        """Release the writer (its lock, the previous version it read); uncommitted work is dropped."""


@dataclass(frozen=True)
class Description:
    """What the build tells the store to record in the manifest beside what the store knows itself."""

    embedder: Embedder
    chunker: dict
    source: dict[str, str]
    malformed_files: int
    started: float  # time.perf_counter() at the build's start
    embed_seconds: float
    embedded: int
    reused: int


@dataclass(frozen=True)
class BuildProgress:
    """How far a running build is: what `rag index` records and the service reads (/readyz, the page)."""

    phase: str  # "chunking", "embedding" or "writing"
    vectors: int  # distinct passages with a vector so far
    passages: int  # distinct passages the build indexes
    started_at: float  # time.time() at the build's start
    pid: int  # the building process: a record whose process is gone is an interrupted build's

    @property
    def fraction(self) -> float:
        return round(self.vectors / self.passages, 4) if self.passages else 0.0


class StoreKind(Protocol):
    """One configured store: how to open it for search, write to it, and name its live version."""

    def open(self, embedder: Embedder | None = None) -> IndexStore: ...

    def lock(self) -> AbstractContextManager[None]:
        """Hold the store's build lock (IndexBusy when another build has it); writers made meanwhile share it.
        A build takes it before loading the model, so a second build is refused at once."""

    def writer(self, embedder: Embedder, *, rebuild: bool) -> IndexWriter: ...

    def live_generation(self) -> str: ...

    def manifest(self) -> Manifest:
        """The live version's manifest, read without loading the index."""

    def progress(self) -> BuildProgress | None:
        """The running build's progress; None when no build is running."""
