"""Embedding backends behind one small protocol, looked up by name in a registry.

Vectors are L2-normalised float32, so FAISS inner product is cosine similarity. Models load only from
local folders or the local cache: nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# No model hub is reachable; fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from rag.errors import InvalidSetting, ModelNotInstalled, RagError  # noqa: E402


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
    """sentence-transformers in one of four precisions: three on the CPU, fp16 on a CUDA GPU.

    `fp32` is the reference. `bf16` runs the matrix products in bfloat16 under autocast (fp32
    accumulation), which the AMX units of recent Xeons execute several times faster; its vectors match
    fp32 to a cosine of 0.9999 or more, so they share fp32's vector space. `int8` applies torch dynamic
    quantisation to the Linear layers: faster on any x86 CPU, but its vectors drift (cosine ~0.98).
    `bf16` applies to passages only: a single short question gains nothing from AMX, and under autocast
    it was slower than in fp32 (p50 34.6 ms against 28.9 ms, interleaved on the allforces dev questions).
    `fp16` runs the whole model in half precision on a CUDA GPU; the same model in fp16 on the CPU gave vectors
    at a cosine of 0.9998 or more to fp32 (128 corpus passages), so it shares fp32's vector space.
    """

    def __init__(self, model: str, *, query_prompt: str, passage_prompt: str, batch_size: int = 32,
                 precision: str = "fp32", threads: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in CLI output
        torch.set_num_threads(threads or os.cpu_count() or 1)  # process-wide: torch has one intra-op pool
        device = "cuda" if precision == "fp16" else "cpu"
        try:
            self._model = SentenceTransformer(model, device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotInstalled(
                f"embedding model {model!r} is not available offline: run `rag model install`, "
                f"or set RAG_MODEL to a local sentence-transformers folder ({exc.__class__.__name__})"
            ) from exc
        if precision == "int8":
            self._model = torch.ao.quantization.quantize_dynamic(self._model, {torch.nn.Linear}, dtype=torch.qint8)
        elif precision == "fp16":
            self._model.half()
        self._autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
        self._renormalise = precision == "fp16"  # unit length in fp32, as the other precisions give
        self.model_id = model_identity(model)
        self.backend = {"fp32": "torch", "bf16": "torch-bf16", "int8": "torch-int8", "fp16": CUDA_BACKEND}[precision]
        self.dim = int(self._model.get_embedding_dimension())
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.batch_size = batch_size

    def _encode(self, texts: Sequence[str], prompt: str, precision=nullcontext) -> np.ndarray:
        with precision():
            vectors = self._model.encode(
                list(texts), prompt=prompt, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        if self._renormalise:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Encode in length order so batches carry little padding; report progress per block."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        block = self.batch_size * 4
        for first in range(0, len(order), block):
            ids = order[first : first + block]
            out[ids] = self._encode([texts[i] for i in ids], self.passage_prompt, self._autocast)
            if progress:
                progress(len(ids))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # verbose=False: counting over-long texts is the point here, not a mistake to warn about
        encoded = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]


EmbedderFactory = Callable[..., Embedder]


@dataclass(frozen=True)
class Backend:
    factory: EmbedderFactory
    # Backends of one vector space make interchangeable vectors: an index built with one may be
    # queried or updated with another. Measured on 2,048 corpus passages against fp32 (bench/backends.py).
    vector_space: str


_BACKENDS: dict[str, Backend] = {}
AUTO = "auto"


def register_backend(name: str, factory: EmbedderFactory, vector_space: str) -> None:
    _BACKENDS[name] = Backend(factory, vector_space)


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def vector_space(backend: str) -> str:
    """The space of a backend's vectors; an unknown (say, newer) backend only matches itself."""
    known = _BACKENDS.get(backend)
    return known.vector_space if known else backend


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo); empty where they cannot be read."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_auto_backend(flags: set[str]) -> str:
    """The fastest CPU backend in the fp32 vector space, by what each kind of CPU measured (bench/backends.py speed,
    256-512 passages, 2 cores): with AMX, torch bf16 (84.6 passages/s against fp32's 28.1 and OpenVINO bf16's 63);
    with AVX-512, OpenVINO, in bf16 where the CPU multiplies bf16 (AMD Zen 4: 52.3 against torch fp32's 22.1, ONNX
    Runtime int8's 36.8 and OpenVINO f32's 31.9), else in f32; with AVX2 only, ONNX Runtime int8 (Zen 3: 16.3
    against fp32's 12)."""
    if "amx_bf16" in flags:
        return "torch-bf16"
    if "avx512_bf16" in flags:
        return "openvino-bf16"
    if "avx512f" in flags:
        return "openvino"
    return "onnx-int8"


# Backends that run the graph exported from a local model folder (`rag model install`), not a hub name.
EXPORTED_GRAPH_BACKENDS = {"onnx", "onnx-int8", "openvino", "openvino-bf16"}


DEVICES = ("auto", "cpu", "cuda")
CUDA_BACKEND = "torch-cuda"


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU; without an NVIDIA driver loaded, answered without importing torch (seconds)."""
    if not Path("/proc/driver/nvidia").exists():
        return False
    import torch

    return torch.cuda.is_available()


def exported_graph_runs(backend: str, model: str) -> bool:
    """`model` is a local folder (the graph is exported from it) and the backend's runtime is installed."""
    runtime = "openvino" if backend.startswith("openvino") else "onnxruntime"
    return Path(model).is_dir() and importlib.util.find_spec(runtime) is not None


def resolve_backend(backend: str, device: str = "auto", model: str | None = None) -> str:
    """`auto` picks fp16 on a CUDA GPU when torch sees one (device auto or cuda); on a CPU, what measured fastest
    on its kind (`cpu_auto_backend`; an exported-graph backend only when `model` is a local folder, else fp32).
    All of them write the same vector space (measured: bench/backends.py, README)."""
    if device not in DEVICES:
        raise InvalidSetting(f"unknown embedding device {device!r}; available: {', '.join(DEVICES)}")
    if device == "cuda":
        if backend not in (AUTO, CUDA_BACKEND):
            raise InvalidSetting(f"embedding backend {backend} runs on the CPU: with RAG_EMBEDDING_DEVICE=cuda "
                                 f"set RAG_EMBEDDING_BACKEND=auto")
        if not cuda_available():
            raise InvalidSetting("RAG_EMBEDDING_DEVICE=cuda, but torch sees no CUDA GPU (the CPU build of torch "
                                 "never does): set RAG_EMBEDDING_DEVICE=auto or cpu")
        return CUDA_BACKEND
    if backend == AUTO:
        if device == "auto" and cuda_available():
            return CUDA_BACKEND
        chosen = cpu_auto_backend(cpu_flags())
        runs = chosen not in EXPORTED_GRAPH_BACKENDS or (model is not None and exported_graph_runs(chosen, model))
        return chosen if runs else "torch"
    return backend


def create_embedder(backend: str, model: str, *, query_prompt: str, passage_prompt: str,
                    batch_size: int = 32, threads: int | None = None, device: str = "auto") -> Embedder:
    name = resolve_backend(backend, device, model)
    try:
        chosen = _BACKENDS[name]
    except KeyError:
        raise RagError(
            f"unknown embedding backend {backend!r}; available: {', '.join([AUTO, *available_backends()])}"
        ) from None
    return chosen.factory(model, query_prompt=query_prompt, passage_prompt=passage_prompt, batch_size=batch_size,
                          threads=threads)


class DeferredEmbedder:
    """The configured embedder, described at once and loaded at its first use.

    An update embeds only new passages, often none or a few dozen: it then never pays for importing torch and
    loading the model (about 5 s of a 2-core machine's time). Tokens are counted (the chunker) with the model
    folder's own tokenizer, and a batch of at most `small_batch` passages in the fp32 space goes to ONNX Runtime
    fp32 (the same vectors: cosine 0.9999996 or more), which starts in about a second.
    """

    def __init__(self, backend: str, model: str, *, small_batch: int = 256, **options):
        self._backend_option, self._model, self._options = backend, model, options
        self.backend = resolve_backend(backend, options.get("device", "auto"), model)
        self.model_id = model_identity(model)
        self.query_prompt, self.passage_prompt = options["query_prompt"], options["passage_prompt"]
        onnx_fp32 = vector_space(self.backend) == "fp32" and exported_graph_runs("onnx", model)
        self._small_batch = small_batch if onnx_fp32 else 0
        self._loaded: dict[str, Embedder] = {}
        self._tokenizer = None
        self._dim = local_model_dim(model)

    def _embedder(self, small: bool) -> Embedder:
        """A small batch goes to whichever model is loaded already, else to ONNX Runtime fp32."""
        name = self.backend
        if small and self.backend not in self._loaded:
            name = "onnx"
        if name not in self._loaded:
            self._loaded[name] = create_embedder(self._backend_option if name == self.backend else name, self._model,
                                                 **self._options)
        return self._loaded[name]

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._embedder(small=False).dim
        return self._dim

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self._embedder(small=len(texts) <= self._small_batch).encode_passages(texts, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder(small=bool(self._small_batch)).encode_queries(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self._tokenizer is None and (Path(self._model) / "tokenizer.json").is_file():
            from rag.onnx_embedder import fast_tokenizer

            self._tokenizer = fast_tokenizer(Path(self._model))
        return self._tokenizer.count(texts) if self._tokenizer else self._embedder(small=False).count_tokens(texts)


def local_model_dim(model: str) -> int | None:
    """The vector size of a local sentence-transformers folder whose modules only pool and normalise the
    transformer's output (its hidden size); None when only loading the model tells."""
    folder = Path(model)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kinds = {m.get("type", "").rsplit(".", 1)[-1] for m in modules}
    return int(config["hidden_size"]) if kinds <= {"Transformer", "Pooling", "Normalize"} else None


register_backend("torch", SentenceTransformerEmbedder, vector_space="fp32")
register_backend("torch-bf16", lambda model, **kw: SentenceTransformerEmbedder(model, precision="bf16", **kw),
                 vector_space="fp32")
register_backend("torch-int8", lambda model, **kw: SentenceTransformerEmbedder(model, precision="int8", **kw),
                 vector_space="int8")
register_backend(CUDA_BACKEND, lambda model, **kw: SentenceTransformerEmbedder(model, precision="fp16", **kw),
                 vector_space="fp32")


def _onnx_embedder(model: str, **kw) -> Embedder:
    from rag.onnx_embedder import OnnxEmbedder  # onnxruntime is imported only by those who use it

    return OnnxEmbedder(model, **kw)


register_backend("onnx", _onnx_embedder, vector_space="fp32")  # cosine >= 0.9999996 to torch fp32 (questions)
# passages through int8 weights, questions through the fp32 graph
register_backend("onnx-int8", lambda model, **kw: _onnx_embedder(model, int8_passages=True, **kw),
                 vector_space="fp32")


def _openvino_embedder(model: str, **kw) -> Embedder:
    from rag.openvino_embedder import OpenVinoEmbedder  # openvino is imported only by those who use it

    return OpenVinoEmbedder(model, **kw)


# the exported fp32 graph under OpenVINO; bf16 matrix products (fp32 accumulation) keep fp32's space
register_backend("openvino", lambda model, **kw: _openvino_embedder(model, precision="f32", **kw),
                 vector_space="fp32")
register_backend("openvino-bf16", lambda model, **kw: _openvino_embedder(model, precision="bf16", **kw),
                 vector_space="fp32")
