"""Index a loaded corpus into any store: chunk what changed, embed only passages the store lacks, commit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from rag.chunking import Chunker, ChunkerConfig
from rag.corpus import CorpusLoad
from rag.embeddings import Embedder
from rag.errors import MalformedArticle
from rag.index.folder import text_hash
from rag.index.store import Description, StoreKind


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
    *,
    source: dict[str, str],
    rebuild: bool = False,
    progress: Callable[[int], None] | None = None,
    on_embed_start: Callable[[int], None] | None = None,
) -> BuildReport:
    """Make the store hold exactly the loaded articles, reusing its chunks and vectors unless `rebuild`.

    `source` describes where the articles came from (corpus folder, site URL); the manifest keeps it.
    """
    started = time.perf_counter()
    report = BuildReport(malformed=loaded.malformed)
    writer = store.writer(embedder, rebuild=rebuild)
    try:
        files = {a.path: a.content_hash for a in loaded.articles}
        known = writer.files
        report.files_added = sorted(set(files) - set(known)) if known else []
        report.files_changed = sorted(p for p in files if p in known and known[p] != files[p])
        report.files_deleted = sorted(set(known) - set(files))

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
        if on_embed_start:
            on_embed_start(len(missing))
        embed_started = time.perf_counter()
        if missing:
            vectors = embedder.encode_passages([texts[h] for h in missing], progress=progress)
            writer.put_vectors(dict(zip(missing, np.asarray(vectors))))
        report.embed_seconds = time.perf_counter() - embed_started
        report.embedded, report.reused = len(missing), len(texts) - len(missing)

        manifest = writer.commit(Description(
            embedder=embedder, chunker=chunker_settings, source=source, malformed_files=len(loaded.malformed),
            started=started, embed_seconds=report.embed_seconds, embedded=report.embedded, reused=report.reused))
    finally:
        writer.close()
    counts = manifest.counts
    report.articles, report.chunks, report.distinct_texts = counts.articles, counts.chunks, counts.distinct_texts
    report.duplicate_chunks, report.seconds = counts.duplicate_chunks, manifest.build.seconds
    report.generation = store.live_generation()
    return report
