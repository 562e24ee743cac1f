"""Settings to parts, one path: every part's config is built here from the one `Settings`, and nowhere else."""

from __future__ import annotations

from rag.embeddings import Embedder, create_embedder
from rag.settings import Settings


def embedder(settings: Settings) -> Embedder:
    return create_embedder(settings.embedding_backend, settings.model, query_prompt=settings.query_prompt,
                           passage_prompt=settings.passage_prompt, batch_size=settings.embed_batch_size)


def live_generation(settings: Settings) -> str:
    """The name of the index's live generation (raises IndexNotBuilt): what a running service polls."""
    from rag.index import live_generation as live

    return live(settings.index).name
