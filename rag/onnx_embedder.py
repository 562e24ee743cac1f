"""The model exported to ONNX and run by ONNX Runtime: the `onnx` embedding backend, which `rag serve` uses.

One short question is mostly per-call overhead in torch. The same graph under ONNX Runtime embedded the 50
allforces dev questions at p50 25.6 ms against torch's 54.2 ms (one thread each, a 2-core AMD EPYC without
AVX-512), with a cosine of 0.9999996 or more to torch's fp32 vectors: the same vector space, so an index built
with torch serves questions embedded here. Passages run at torch fp32's speed (11.1 against 11.9 per second on
that CPU), so builds keep torch (bf16 on AMX). A service on this backend holds no torch model at all. Mean
pooling and the L2 norm are inside the graph, as in the sentence-transformers pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from functools import lru_cache
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rag.errors import ModelNotInstalled

log = logging.getLogger(__name__)

ONNX_FILE = Path("onnx") / "model.onnx"
ONNX_INT8_FILE = Path("onnx") / "model-int8.onnx"
OPSET = 17
MAX_TOKENS = 512


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model_dir: Path) -> Path:
    """Write `model_dir/onnx/model.onnx` from the sentence-transformers folder (atomically); returns its path."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    target = model_dir / ONNX_FILE
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    sample = tokenizer(["query: テスト", "query: 例文です"], return_tensors="pt", padding=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the model's Python branches, expected here
        torch.onnx.export(Pooled(), (sample["input_ids"], sample["attention_mask"]), str(partial),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}},
                          opset_version=OPSET, dynamo=False)
    partial.replace(target)
    return target


def quantize_onnx(model_dir: Path) -> Path:
    """Write `model_dir/onnx/model-int8.onnx`: the exported graph with int8 weights (per output channel) and
    activations quantized on the fly, for the `onnx-int8` backend's passages; returns its path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exported, target = model_dir / ONNX_FILE, model_dir / ONNX_INT8_FILE
    if not exported.is_file():
        export_onnx(model_dir)
    partial = target.with_suffix(".partial")
    logging.disable(logging.WARNING)  # its advice to pre-process the graph: the figures were measured without
    try:
        quantize_dynamic(str(exported), str(partial), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    partial.replace(target)
    return target


class FastTokenizer:
    """The model folder's `tokenizer.json` in the `tokenizers` library: the same ids as the transformers tokenizer
    that sentence-transformers uses (every passage of a 60-article index compared), loaded without importing
    transformers (seconds on a 2-core machine)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._pad_token = config.get("pad_token") or "<pad>"
        self._pad_id = self._tokenizer.token_to_id(self._pad_token)
        self._lock = threading.Lock()  # truncation and padding are settings of the one tokenizer: set per call

    def batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """input ids and attention mask, padded to the longest text and cut at the model's `MAX_TOKENS`."""
        with self._lock:
            self._tokenizer.enable_truncation(MAX_TOKENS)
            self._tokenizer.enable_padding(pad_id=self._pad_id, pad_token=self._pad_token)
            encoded = self._tokenizer.encode_batch(list(texts))
        return (np.array([e.ids for e in encoded], dtype=np.int64),
                np.array([e.attention_mask for e in encoded], dtype=np.int64))

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text with the special tokens, uncut."""
        with self._lock:
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
            return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]


@lru_cache(maxsize=4)
def fast_tokenizer(folder: Path) -> FastTokenizer:
    """One tokenizer per model folder and process (loading it takes about a second): the chunker's token counts
    and the model share it."""
    return FastTokenizer(folder)


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its notes on the exported graph's shapes are not for the reader
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def exported_graph(folder: Path, backend: str) -> Path:
    """The model folder's exported ONNX graph, which `backend` runs; exported now if the folder predates it."""
    if not (folder / "config.json").is_file():
        raise ModelNotInstalled(f"embedding backend {backend} needs a local model folder; {str(folder)!r} is none: "
                                f"run `rag model install` or set RAG_MODEL")
    path = folder / ONNX_FILE
    if not path.is_file():
        log.info("exporting %s to ONNX (once)", folder)
        export_onnx(folder)
    return path


class OnnxEmbedder:
    """The `Embedder` protocol on ONNX Runtime (CPU): questions and passages, no torch model in memory."""

    backend = "onnx"

    def __init__(self, model: str, *, query_prompt: str, passage_prompt: str, batch_size: int = 32,
                 threads: int | None = None, int8_passages: bool = False):
        from rag.embeddings import model_identity

        folder = Path(model)
        self._session = _session(exported_graph(folder, "onnx"), threads)
        self._passage_session = self._session
        if int8_passages:
            self.backend = "onnx-int8"
            quantized = folder / ONNX_INT8_FILE
            if not quantized.is_file():
                log.info("quantizing %s to int8 (once)", path)
                quantize_onnx(folder)
            self._passage_session = _session(quantized, threads)
        self._tokenizer = fast_tokenizer(folder)
        self.model_id = model_identity(model)
        self.dim = int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt
        self.batch_size = batch_size

    def _encode(self, texts: Sequence[str], session=None) -> np.ndarray:
        ids, mask = self._tokenizer.batch(texts)
        vectors = (session or self._session).run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.query_prompt + t for t in texts])

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """In length order, as the torch backend does: batches of like lengths carry little padding."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for first in range(0, len(order), self.batch_size):
            ids = order[first : first + self.batch_size]
            out[ids] = self._encode([self.passage_prompt + texts[i] for i in ids], self._passage_session)
            if progress:
                progress(len(ids))
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._tokenizer.count(texts)
