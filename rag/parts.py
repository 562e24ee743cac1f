"""Settings to parts, one path: each part's small config is made here from the one `Settings`, and nowhere else.

The CLI, the engine, the service, the evaluation and the benchmarks all build their parts through these
functions, so a new setting is read in one place. Lower modules take their own config dataclasses
and never see `Settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

from pydantic import SecretStr

from rag.chunking import ChunkerConfig
from rag.corpus import READER, CorpusLoad, KnownFiles, load_corpus
from rag.embeddings import DeferredEmbedder, Embedder, create_embedder
from rag.errors import InvalidSetting, RagError
from rag.generators import Generator, create_generator, unknown_settings
from rag.index import BuildConfig, FolderConfig, FolderStore, IndexStore, StoreKind
from rag.index.milvus import MilvusConfig, MilvusStore
from rag.querylog import QueryLogConfig
from rag.retrieval import Fusion, Mode, RetrievalConfig, parse_choice
from rag.settings import Settings

# How each kind of index store is configured from the settings (RAG_STORE names one).
STORES: dict[str, Callable[[Settings], StoreKind]] = {
    "folder": lambda s: FolderStore(FolderConfig(s.index, s.bm25_k1, s.bm25_b, s.torch_threads)),
    "milvus": lambda s: MilvusStore(MilvusConfig(s.milvus_uri, s.milvus_token or SecretStr(""), s.milvus_collection,
                                                 s.milvus_timeout, s.bm25_k1, s.bm25_b, s.milvus_dense_index)),
}


def checked(settings: Settings) -> Settings:
    """The settings, after refusing keywords that no part declares (`Settings` keeps them as extras)."""
    unknown = unknown_settings(settings.model_extra or {})
    if unknown:
        raise InvalidSetting(f"unknown setting(s): {', '.join(unknown)}")
    return settings


def embedder(settings: Settings, *, deferred: bool = False) -> Embedder:
    """The configured embedder; `deferred`: loaded at its first use (a build that may embed nothing)."""
    make = DeferredEmbedder if deferred else create_embedder
    return make(settings.embedding_backend, settings.model, query_prompt=settings.query_prompt,
                passage_prompt=settings.passage_prompt, batch_size=settings.embed_batch_size,
                threads=settings.torch_threads, device=settings.embedding_device)


def corpus(settings: Settings, known: KnownFiles | None = None) -> CorpusLoad:
    return load_corpus(settings.corpus, site_url=settings.site_url, permalink=settings.permalink,
                       rules=settings.site_rules, max_bytes=settings.max_article_bytes, known=known)


def known_files(settings: Settings, store: StoreKind) -> KnownFiles | None:
    """The live index's files, when an update may leave its unchanged ones unread: the index has every vector
    (else a resumed build must still embed them) and was written by this version with these chunker settings."""
    try:
        manifest = store.manifest()
    except RagError:  # no index yet, or one a rebuild replaces
        return None
    if not (manifest.has_vectors and manifest.chunker == asdict(chunker_config(settings))):
        return None
    source = manifest.source
    return KnownFiles(dict(manifest.files), source.get("site_url", ""), source.get("permalink", ""),
                      source.get("site_rules", ""), source.get("reader", ""))


def corpus_source(settings: Settings, loaded: CorpusLoad) -> dict[str, str]:
    """Where the articles came from, as the index's manifest records it."""
    return {"corpus": str(settings.corpus), "site_url": loaded.site_url, "permalink": loaded.permalink,
            "site_rules": settings.site_rules, "reader": READER}


def chunker_config(settings: Settings) -> ChunkerConfig:
    return ChunkerConfig(min_chars=settings.chunk_min_chars, target_chars=settings.chunk_target_chars,
                         max_chars=settings.chunk_max_chars, max_tokens=settings.chunk_max_tokens,
                         passage_prompt=settings.passage_prompt)


def build_config(settings: Settings) -> BuildConfig:
    return BuildConfig(terms_first_from=settings.terms_first_from, checkpoint=settings.vector_checkpoint)


def store(settings: Settings) -> StoreKind:
    try:
        return STORES[settings.store](settings)
    except KeyError:
        raise InvalidSetting(f"unknown index store {settings.store!r}; available: {', '.join(STORES)}") from None


def open_store(settings: Settings, embedder: Embedder | None = None) -> IndexStore:
    return store(settings).open(embedder)


def live_generation(settings: Settings) -> str:
    """The name of the index's live generation (raises IndexNotBuilt): what a running service polls."""
    return store(settings).live_generation()


def retrieval_config(settings: Settings) -> RetrievalConfig:
    return RetrievalConfig(
        mode=parse_choice(Mode, settings.retriever, "retriever"),
        fusion=parse_choice(Fusion, settings.fusion, "fusion"),
        dense_weight=settings.dense_weight, rrf_k=settings.rrf_k, candidates=settings.candidates,
        recurrence_penalty=settings.recurrence_penalty, date_boost=settings.date_boost,
        dense_slot=settings.dense_slot)


def generator(settings: Settings, name: str, embedder: Embedder) -> Generator:
    """Generator `name`, its own settings read from its `RAG_<PREFIX>_*` variables and the prefixed extras."""
    extras: Mapping[str, object] = settings.model_extra or {}
    return create_generator(name, embedder, extras)


QUERY_LOG_OFF = ("", "off")


def query_log_config(settings: Settings) -> QueryLogConfig | None:
    """The query log's file and retention, None when it is turned off. By default the file sits beside the
    index folder, named after it (`indexes/default.querylog.sqlite`): one log per blog, kept across
    rebuilds (which replace what is inside the folder), and out of `.cache/`, which may be wiped at will."""
    value = settings.query_log
    if value is not None and value.strip().lower() in QUERY_LOG_OFF:
        return None
    path = Path(value) if value is not None else settings.index.with_name(settings.index.name + ".querylog.sqlite")
    return QueryLogConfig(path, settings.query_log_days)
