"""Index a loaded corpus into any store: chunk what changed, embed only passages the store lacks, commit.

A long first build goes live twice: first a terms-only generation (corpus, chunks and BM25, minutes), which
answers by BM25 while the model embeds, then the hybrid one. Vectors are handed to the store in checkpoints,
so a build that is stopped resumes without embedding them again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from rag.chunking import Chunker, ChunkerConfig
from rag.corpus import CorpusLoad
from rag.embeddings import Embedder
from rag.errors import CorpusNotFound, MalformedArticle, RagError
from rag.index.folder import text_hash
from rag.index.manifest import Manifest
from rag.index.store import BuildProgress, Description, IndexWriter, StoreKind


@dataclass(frozen=True)
class BuildConfig:
    # A build that must embed at least this many passages first makes a terms-only generation live, where the
    # store serves one (`IndexWriter.terms_first`).
    terms_first_from: int
    checkpoint: int  # passages embedded between two hand-overs of vectors to the store


@dataclass
class BuildReport:
    articles: int = 0
    chunks: int = 0
    distinct_texts: int = 0
    duplicate_chunks: int = 0  # chunks whose text another chunk already has: stored once, embedded once
    embedded: int = 0  # texts sent to the model in this build
    reused: int = 0  # texts whose vectors the store already had
    files_added: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    malformed: list[MalformedArticle] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    generation: str = ""
    terms_first_seconds: float | None = None  # when the terms-only generation went live, if one was made

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0

    @property
    def embedded_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0


def build_index(
    loaded: CorpusLoad,
    store: StoreKind,
    embedder: Embedder,
    chunker_config: ChunkerConfig,
    config: BuildConfig,
    *,
    source: dict[str, str],
    rebuild: bool = False,
    progress: Callable[[int], None] | None = None,
    on_embed_start: Callable[[int], None] | None = None,
    on_terms_first: Callable[[BuildReport], None] | None = None,
) -> BuildReport:
    """Make the store hold exactly the loaded articles, reusing its chunks and vectors unless `rebuild`.

    `source` describes where the articles came from (corpus folder, site URL); the manifest keeps it.
    """
    # an index of nothing would replace a live one: refuse before touching the store
    if not (loaded.articles or loaded.unchanged):
        first = f" (the first: {loaded.malformed[0]})" if loaded.malformed else ""
        raise CorpusNotFound(f"none of the corpus's {len(loaded.malformed)} files can be read as an article{first}; "
                             f"the index is unchanged")
    started, started_at = time.perf_counter(), time.time()
    report = BuildReport(malformed=loaded.malformed)
    writer = store.writer(embedder, rebuild=rebuild)
    try:
        # files the reader left unparsed are unchanged: the writer keeps their articles as the live index has them
        files = {a.path: a.content_hash for a in loaded.articles} | loaded.unchanged
        known = writer.files
        report.files_added = sorted(set(files) - set(known)) if known else []
        report.files_changed = sorted(p for p in files if p in known and known[p] != files[p])
        report.files_deleted = sorted(set(known) - set(files))

        def record(phase: str, vectors: int, passages: int) -> None:
            writer.record_progress(BuildProgress(phase, vectors, passages, started_at, os.getpid()))

        record("chunking", 0, 0)
        chunker = Chunker(chunker_config, embedder.count_tokens)
        chunker_settings = asdict(chunker_config)
        texts: dict[str, str] = {}  # hash -> text of every passage, in first-seen order
        for article in loaded.articles:
            chunks = writer.previous_chunks(article, chunker_settings) or chunker.chunk(article)
            writer.put(article, chunks)
            for chunk in chunks:
                texts.setdefault(text_hash(chunk.text), chunk.text)
        for path in report.files_deleted:
            writer.delete(path)

        missing = [h for h in texts if writer.known_vector(h) is None]
        report.reused = len(texts) - len(missing)

        def describe(embed_seconds: float, embedded: int) -> Description:
            return Description(embedder=embedder, chunker=chunker_settings, source=source,
                               malformed_files=len(loaded.malformed), started=started, embed_seconds=embed_seconds,
                               embedded=embedded, reused=report.reused)

        live_holds_these = bool(known) and not (report.files_added or report.files_changed or report.files_deleted)
        if len(missing) >= config.terms_first_from and writer.terms_first and not live_holds_these:
            record("writing", report.reused, len(texts))
            writer.commit(describe(0.0, 0))
            report.terms_first_seconds = round(time.perf_counter() - started, 2)
            if on_terms_first:
                on_terms_first(report)

        if on_embed_start:
            on_embed_start(len(missing))
        embed_started = time.perf_counter()
        _embed(missing, texts, writer, embedder, config.checkpoint, progress,
               lambda done: record("embedding", report.reused + done, len(texts)))
        report.embed_seconds = time.perf_counter() - embed_started
        report.embedded = len(missing)

        record("writing", len(texts), len(texts))
        # every file unchanged and unread (the live index has every vector), from the same source: nothing to write
        untouched = bool(loaded.unchanged) and not loaded.articles and not report.files_deleted
        live = _live_manifest(store) if untouched else None
        written = live is None or live.source != source
        manifest = writer.commit(describe(report.embed_seconds, report.embedded)) if written else live
    finally:
        writer.close()
    counts = manifest.counts
    # every passage of the index not embedded now was reused, those of unread, unchanged files included
    report.reused = counts.distinct_texts - manifest.dense.missing - report.embedded
    report.articles, report.chunks, report.distinct_texts = counts.articles, counts.chunks, counts.distinct_texts
    report.duplicate_chunks = counts.duplicate_chunks
    report.seconds = manifest.build.seconds if written else round(time.perf_counter() - started, 2)
    report.generation = store.live_generation()
    return report


def _live_manifest(store: StoreKind) -> Manifest | None:
    try:
        return store.manifest()
    except RagError:
        return None


def _embed(missing: list[str], texts: dict[str, str], writer: IndexWriter, embedder: Embedder, checkpoint: int,
           progress: Callable[[int], None] | None, embedded: Callable[[int], None]) -> None:
    """Embed the missing passages shortest first (batches of like lengths carry little padding), handing each
    checkpoint's vectors to the store as soon as they are made."""
    order = sorted(missing, key=lambda h: len(texts[h]))
    for first in range(0, len(order), checkpoint):
        hashes = order[first : first + checkpoint]
        vectors = embedder.encode_passages([texts[h] for h in hashes], progress=progress)
        writer.put_vectors(dict(zip(hashes, np.asarray(vectors))))
        embedded(first + len(hashes))
