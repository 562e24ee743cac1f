"""One Settings object: defaults, overridden by `RAG_*` environment variables, then by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = "models/multilingual-e5-small"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    corpus: Path = Field(Path("corpus"), description="Folder of Jekyll posts (Markdown + YAML front matter).")
    index: Path = Field(Path("indexes/default"), description="Index folder written by `rag index`.")
    shared: Path = Field(Path("../shared"), description="Shared evaluation data (tests, eval, bench only).")

    site_url: str = Field(
        "https://ai-media.co.jp",
        description="Base URL of the site; a `_config.yml` `url` beside the posts takes precedence.",
    )
    permalink: str = Field(
        "/:year/:month/:day/:title/",
        description="Jekyll permalink pattern; a `_config.yml` `permalink` beside the posts takes precedence.",
    )

    model: str = Field(
        DEFAULT_MODEL_DIR,
        description="sentence-transformers model: a local folder or a name already in the local cache.",
    )
    embedding_backend: str = Field("torch", description="Embedding backend: torch (fp32) or torch-int8.")
    query_prompt: str = Field("query: ", description="Prefix the model expects before a question.")
    passage_prompt: str = Field("passage: ", description="Prefix the model expects before a passage.")
    embed_batch_size: int = Field(32, ge=1, description="Passages per embedding batch.")

    chunk_min_chars: int = Field(100, ge=0, description="Consecutive paragraphs shorter than this merge together.")
    chunk_target_chars: int = Field(400, ge=50, description="Merged paragraphs and split pieces stay within this size.")
    chunk_max_chars: int = Field(600, ge=50, description="Longer paragraphs split at sentence boundaries.")
    chunk_max_tokens: int = Field(
        512, ge=16, le=512, description="Hard limit per chunk in model tokens, passage prefix included."
    )
