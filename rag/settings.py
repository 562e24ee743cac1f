"""One Settings object: defaults, overridden by `RAG_*` environment variables, then by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = "models/multilingual-e5-small"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    corpus: Path = Field(Path("corpus"), description="Folder of Jekyll posts (Markdown + YAML front matter).")
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

    model: str = Field(
        DEFAULT_MODEL_DIR,
        description="sentence-transformers model: a local folder or a name already in the local cache.",
    )
    embedding_backend: str = Field(
        "auto", description="Embedding backend: auto (torch-bf16 where the CPU has AMX/AVX-512 BF16, else torch), "
        "torch (fp32), torch-bf16 or torch-int8.")
    query_prompt: str = Field("query: ", description="Prefix the model expects before a question.")
    passage_prompt: str = Field("passage: ", description="Prefix the model expects before a passage.")
    embed_batch_size: int = Field(32, ge=1, description="Passages per embedding batch.")

    chunk_min_chars: int = Field(100, ge=0, description="Consecutive paragraphs shorter than this merge together.")
    chunk_target_chars: int = Field(400, ge=50, description="Merged paragraphs and split pieces stay within this size.")
    chunk_max_chars: int = Field(600, ge=50, description="Longer paragraphs split at sentence boundaries.")
    chunk_max_tokens: int = Field(
        512, ge=16, le=512, description="Hard limit per chunk in model tokens, passage prefix included."
    )

    bm25_k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation (applied at index time).")
    bm25_b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation (applied at index time).")

    k: int = Field(5, ge=1, le=20, description="Passages retrieved per question.")
    retriever: str = Field("hybrid", description="Retrieval mode: hybrid, dense or bm25.")
    fusion: str = Field("convex", description="How hybrid fuses its lists: convex or rrf.")
    dense_weight: float = Field(0.3, ge=0, le=1, description="Share of the dense list in the fusion.")
    candidates: int = Field(100, ge=1, description="Depth taken from each retriever before fusion.")
    dense_slot: int = Field(
        5, ge=0, description="Hybrid keeps the dense retriever's best passage among the first N (0: off).")
    recurrence_penalty: float = Field(0.0, ge=0, description="Down-weights passages repeated in many articles.")
    date_boost: float = Field(0.0, ge=0, description="Weight of the article date for 最新/最近/dated questions.")
    abstain_below: float = Field(
        0.55, ge=0, le=1, description="Abstain when no top passage covers this share of the question's terms."
    )
    generator: str = Field("extractive", description="Default answer generator: extractive or openai.")

    # The `openai` generator: any server speaking the OpenAI Chat Completions protocol (rag/generators/openai.py).
    llm_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 (Ollama); "
        "unset leaves the openai generator unconfigured.")
    llm_model: str = Field("qwen2.5", description="Model name sent to the LLM server.")
    llm_api_key: SecretStr | None = Field(
        None, description="API key sent as a Bearer token; never logged or returned.")
    llm_timeout: float = Field(60.0, gt=0, description="Seconds an LLM answer may take before the extractive fallback.")
    llm_max_tokens: int = Field(400, ge=1, description="Most tokens an LLM answer may have.")
    llm_temperature: float = Field(0.0, ge=0, le=2, description="LLM sampling temperature.")
    llm_prompt: Path | None = Field(
        None, description="Jinja2 prompt template replacing rag/generators/prompts/grounded.ja.j2.")

    # The HTTP service (`rag serve`, rag/service.py).
    admin_api_key: str | None = Field(
        None, description="Key for POST /admin/reload (header X-API-Key); unset disables the admin endpoints."
    )
    host: str = Field("127.0.0.1", description="Address `rag serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `rag serve` listens on.")
    workers: int = Field(1, ge=1, description="Worker processes of `rag serve` (each loads the model once).")
    reload_poll_seconds: float = Field(
        5.0, ge=0, description="How often the service checks the index's CURRENT for a new generation; 0 disables."
    )
