"""Embedding backends behind one small protocol, looked up by name in a registry.

Vectors are L2-normalised float32, so FAISS inner product is cosine similarity. Models load only from
local folders or the local cache: nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

# No model hub is reachable; fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from rag.errors import ModelNotInstalled, RagError  # noqa: E402


class Embedder(Protocol):
    model_id: str  # what the manifest records and checks
    backend: str
    dim: int
    query_prompt: str
    passage_prompt: str

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


def model_identity(model: str) -> str:
    """A stable id: the folder name plus a short hash of its config for local models, else the name."""
    path = Path(model)
    if path.is_dir():
        digest = hashlib.sha256()
        for name in ("config.json", "modules.json", "tokenizer_config.json"):
            if (path / name).exists():
                digest.update((path / name).read_bytes())
        size = (path / "model.safetensors").stat().st_size if (path / "model.safetensors").exists() else 0
        digest.update(str(size).encode())
        return f"{path.resolve().name}@{digest.hexdigest()[:12]}"
    return model


class SentenceTransformerEmbedder:
    """sentence-transformers on the CPU; `quantize_int8` applies torch dynamic int8 to the Linear layers."""

    def __init__(self, model: str, *, query_prompt: str, passage_prompt: str, batch_size: int = 32,
                 quantize_int8: bool = False):
        import torch
        from sentence_transformers import SentenceTransformer

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in CLI output
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            self._model = SentenceTransformer(model, device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotInstalled(
                f"embedding model {model!r} is not available offline: run `rag model install`, "
                f"or set RAG_MODEL to a local sentence-transformers folder ({exc.__class__.__name__})"
            ) from exc
        if quantize_int8:
            self._model = torch.ao.quantization.quantize_dynamic(self._model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model_id = model_identity(model)
        self.backend = "torch-int8" if quantize_int8 else "torch"
        self.dim = int(self._model.get_embedding_dimension())
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.batch_size = batch_size

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        vectors = self._model.encode(
            list(texts), prompt=prompt, batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Encode in length order so batches carry little padding; report progress per block."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        block = self.batch_size * 4
        for first in range(0, len(order), block):
            ids = order[first : first + block]
            out[ids] = self._encode([texts[i] for i in ids], self.passage_prompt)
            if progress:
                progress(len(ids))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # verbose=False: counting over-long texts is the point here, not a mistake to warn about
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]


EmbedderFactory = Callable[..., Embedder]
_BACKENDS: dict[str, EmbedderFactory] = {}


def register_backend(name: str, factory: EmbedderFactory) -> None:
    _BACKENDS[name] = factory


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def create_embedder(backend: str, model: str, *, query_prompt: str, passage_prompt: str,
                    batch_size: int = 32) -> Embedder:
    try:
        factory = _BACKENDS[backend]
    except KeyError:
        raise RagError(f"unknown embedding backend {backend!r}; available: {', '.join(available_backends())}") from None
    return factory(model, query_prompt=query_prompt, passage_prompt=passage_prompt, batch_size=batch_size)


register_backend("torch", SentenceTransformerEmbedder)
register_backend("torch-int8", lambda model, **kw: SentenceTransformerEmbedder(model, quantize_int8=True, **kw))
