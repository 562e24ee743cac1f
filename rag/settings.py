"""One Settings object: defaults, overridden by `RAG_*` environment variables, then by CLI flags."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = "models/multilingual-e5-small"
# Extras are a generator's settings passed by keyword; these names hold secrets and never show in a repr.
SECRET_NAME = re.compile(r"(key|token|secret|password)$")


class Settings(BaseSettings):
    """Every setting of the core parts. A generator declares its own settings beside its code
    (`rag/generators/`, read from `RAG_<PREFIX>_*`); keyword arguments here with that prefix
    (`llm_base_url=...`) are kept as extras and handed to it, and `rag.parts` refuses the unknown ones."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="allow")

    def __repr_args__(self):
        extras = self.model_extra or {}
        for name, value in super().__repr_args__():
            yield name, "**********" if name in extras and SECRET_NAME.search(name) and value else value

    corpus: Path = Field(Path("corpus"), description="Folder of Jekyll posts (Markdown + YAML front matter), or the "
                         "Jekyll site holding `_posts/` (the service serves the posts' images from it).")
    index: Path = Field(Path("indexes/default"), description="Index folder written by `rag index`.")
    shared: Path = Field(Path("../shared"), description="Shared evaluation data (tests, eval, bench only).")
    cache: Path = Field(Path(".cache"), description="Cached evaluation indexes and reports.")

    site_url: str = Field(
        "https://ai-media.co.jp",
        description="Base URL of the site; a `_config.yml` `url` beside the posts takes precedence.",
    )
    permalink: str = Field(
        "/:year/:month/:day/:title/",
        description="Jekyll permalink pattern; a `_config.yml` `permalink` beside the posts takes precedence.",
    )

    site_rules: str = Field(
        "allforces", description="Cleanup rule set for machine-written site artefacts: allforces (the ALLFORCES "
        "blog's boilerplate, prompt leaks and chatter) or none (a plain Jekyll blog).")

    max_article_bytes: int = Field(
        1_048_576, ge=1, description="Corpus files larger than this are reported and skipped (the largest post of "
        "the shared corpus is 135 KB).")

    model: str = Field(
        DEFAULT_MODEL_DIR,
        description="sentence-transformers model: a local folder or a name already in the local cache.",
    )
    embedding_backend: str = Field(
        "auto", description="Embedding backend: auto (torch-cuda on a GPU, else by the CPU: torch-bf16 with AMX, "
        "openvino-bf16 with AVX-512 BF16, openvino with AVX-512, else onnx-int8), torch (fp32), torch-bf16, "
        "torch-int8, torch-cuda (fp16 on a CUDA GPU), onnx (ONNX Runtime fp32), onnx-int8 (ONNX Runtime, int8 "
        "passages, fp32 questions), openvino (OpenVINO f32) or openvino-bf16 (OpenVINO, bf16 products).")
    embedding_device: str = Field(
        "auto", description="Where the model runs: auto (a CUDA GPU in fp16 when torch sees one, else the CPU), cpu, "
        "or cuda (an error without a GPU).")
    query_prompt: str = Field("query: ", description="Prefix the model expects before a question.")
    passage_prompt: str = Field("passage: ", description="Prefix the model expects before a passage.")
    embed_batch_size: int = Field(32, ge=1, description="Passages per embedding batch (torch and ONNX Runtime; the "
                                  "OpenVINO backends send requests of 4, one stream per core).")
    terms_first_from: int = Field(
        1000, ge=0, description="A build that must embed at least this many passages, while no index with vectors "
        "is live, first makes a terms-only index live (corpus, chunks and BM25, minutes), which answers by BM25 "
        "alone until the vectors are in.")
    watch_debounce: float = Field(
        2.0, gt=0, description="`rag index --watch`: seconds the corpus folder must stay unchanged before an update "
        "runs (editors and git write files in bursts).")
    vector_checkpoint: int = Field(
        1024, ge=1, description="Passages embedded between two saves of their vectors: a stopped build resumes "
        "from the last save.")

    chunk_min_chars: int = Field(100, ge=0, description="Consecutive paragraphs shorter than this merge together.")
    chunk_target_chars: int = Field(400, ge=50, description="Merged paragraphs and split pieces stay within this size.")
    chunk_max_chars: int = Field(600, ge=50, description="Longer paragraphs split at sentence boundaries.")
    chunk_max_tokens: int = Field(
        512, ge=16, le=512, description="Hard limit per chunk in model tokens, passage prefix included."
    )

    store: str = Field("folder", description="Where the index lives: folder (FAISS + BM25 + SQLite in RAG_INDEX) "
                       "or milvus (collections in the Milvus at RAG_MILVUS_URI).")
    milvus_uri: str = Field(
        "indexes/milvus.db", description="The Milvus of RAG_STORE=milvus: a milvus-lite file, or http://host:19530 "
        "(a `milvus-lite server`, Milvus Standalone or Distributed, Zilliz Cloud).")
    milvus_token: SecretStr | None = Field(
        None, description="Milvus credentials (user:password or an API key); never logged or shown.")
    milvus_collection: str = Field(
        "jrag", description="The alias readers follow in Milvus, and the prefix of the collections a build makes.")
    milvus_dense_index: str = Field(
        "FLAT", description="How a Milvus build indexes the vectors: FLAT (exact, the folder store's results) or "
        "HNSW (approximate, for millions of passages).")
    milvus_timeout: float = Field(
        5.0, gt=0, description="Seconds one Milvus request may take before the service answers 503.")
    bm25_k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation (applied at index time).")
    bm25_b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation (applied at index time).")

    k: int = Field(5, ge=1, le=20, description="Passages retrieved per question.")
    retriever: str = Field("hybrid", description="Retrieval mode: hybrid, dense or bm25.")
    fusion: str = Field("convex", description="How hybrid fuses its lists: convex or rrf.")
    dense_weight: float = Field(0.3, ge=0, le=1, description="Share of the dense list in the fusion.")
    rrf_k: int = Field(60, ge=1, description="The k of reciprocal rank fusion (RAG_FUSION=rrf): larger flattens ranks.")
    candidates: int = Field(100, ge=1, description="Depth taken from each retriever before fusion.")
    dense_slot: int = Field(
        5, ge=0, description="Hybrid keeps the dense retriever's best passage among the first N (0: off).")
    recurrence_penalty: float = Field(0.0, ge=0, description="Down-weights passages repeated in many articles.")
    date_boost: float = Field(0.0, ge=0, description="Weight of the article date for 最新/最近/dated questions.")
    abstain_below: float = Field(
        0.25, ge=0, le=1, description="Abstain when no top passage covers this share of the question's terms."
    )
    subject_check: bool = Field(
        True, description="Quote only passages whose text or title names what the question names (companies, "
        "products, models, people, places); abstain when none does.")
    cite_depth: int = Field(
        20, ge=1, description="How deep the subject check looks for passages it may quote (RAG_K of them are used).")
    generator: str = Field("extractive", description="Default answer generator: extractive or openai.")

    # The owner's view (rag/querylog.py): what readers ask through the service, for `rag report` and /admin/report.
    query_log: str | None = Field(
        None, description="SQLite file of the questions asked through the service, their answers and the readers' "
        "feedback (default: <RAG_INDEX>.querylog.sqlite, beside the index); empty or `off` turns the log off.")
    query_log_days: int = Field(90, ge=1, description="Days the query log keeps a question and its feedback.")

    # The HTTP service (`rag serve`, rag/service/).
    admin_api_key: str | None = Field(
        None, description="Key for the admin endpoints, POST /admin/reload and GET /admin/report (header X-API-Key); "
        "unset disables them."
    )
    host: str = Field("127.0.0.1", description="Address `rag serve` listens on.")
    allowed_origins: str = Field(
        "", description="Comma-separated exact origins (scheme://host[:port]) whose pages may call the API from "
        "the browser, as a widget on the blog does; empty: none. No cookies or credentials are ever allowed.")
    port: int = Field(8000, ge=0, le=65535, description="Port `rag serve` listens on.")
    torch_threads: int | None = Field(
        None, ge=1, description="Threads the model embeds with (torch, or ONNX Runtime) and FAISS searches with "
        "(one pool each per process). Unset: all cores, except `rag serve`, which uses 1: a short question gains "
        "little from a second thread and loses much when another process is busy on the machine.")
    workers: int = Field(1, ge=1, description="Worker processes of `rag serve` (each loads the model once).")
    client_timeout: float = Field(
        10.0, gt=0, description="Seconds a client may take to send a request's headers, and again its body; a "
        "slower or half-open connection is closed (408 for a body).")
    reload_poll_seconds: float = Field(
        0.5, ge=0, description="How often the service checks the index's CURRENT for a new generation (a file "
        "read; for Milvus, one alias lookup), so an update answers within about a second; 0 disables.")
