"""The exported ONNX graph run by OpenVINO: the `openvino` and `openvino-bf16` embedding backends, for builds.

On a CPU with AVX-512 BF16 but no AMX, torch's bf16 autocast runs at half fp32's speed, while OpenVINO's bf16
kernels use the instructions well. What made the difference beyond precision is how the two cores are used:
small batches (4 passages of like length) on one stream per core, each stream one thread, instead of one big
batch split across threads that wait on each other. Mean pooling and the L2 norm are inside the graph
(`rag.onnx_embedder.export_onnx`), so its vectors are the sentence-transformers pipeline's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rag.onnx_embedder import exported_graph, fast_tokenizer

PRECISIONS = {"f32": "openvino", "bf16": "openvino-bf16"}
# Passages per inference request. 512 passages in bf16 on 2 cores of an AMD Zen 4 (AVX-512 BF16, no AMX): 2 and 4
# tied at 53-56 passages/s, 1, 8 and 16 gave 51, 49 and 52; an Intel Xeon of that class liked 4 best (47 against
# 35 for 32). Larger requests pad more and keep a stream waiting for the slowest text longer.
REQUEST_BATCH = 4
PROGRESS_EVERY = 64  # passages between progress reports
IDLE_POLL_SECONDS = 0.002  # a request of 4 passages takes about 100 ms


class OpenVinoEmbedder:
    """The `Embedder` protocol on OpenVINO (CPU) in f32 or bf16, with requests queued over one stream per core.
    `batch_size` (RAG_EMBED_BATCH_SIZE) is the other backends' batch; requests here are `REQUEST_BATCH` passages."""

    def __init__(self, model: str, *, query_prompt: str, passage_prompt: str, batch_size: int = 32,
                 threads: int | None = None, precision: str = "bf16"):
        import openvino as ov

        from rag.embeddings import model_identity

        folder = Path(model)
        path = exported_graph(folder, PRECISIONS[precision])
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": precision}
        if threads:  # one single-threaded stream per thread allowed, as OpenVINO does per core by default
            config |= {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": threads}
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._query_requests = threading.local()  # an infer request serves one call at a time: one per thread
        self._requests = self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self._tokenizer = fast_tokenizer(folder)
        self.backend = PRECISIONS[precision]
        self.model_id = model_identity(model)
        self.dim = int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
        self.query_prompt, self.passage_prompt = query_prompt, passage_prompt

    def _inputs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        ids, mask = self._tokenizer.batch(texts)
        return {"input_ids": ids, "attention_mask": mask}

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        request = getattr(self._query_requests, "request", None)
        if request is None:
            request = self._query_requests.request = self._compiled.create_infer_request()
        vectors = request.infer(self._inputs([self.query_prompt + t for t in texts]))[0]
        return np.array(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """In length order, so each small request carries little padding; the requests run asynchronously while
        this thread tokenizes the next ones, and progress is reported as they finish, without draining the queue."""
        import openvino as ov

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        queue = ov.AsyncInferQueue(self._compiled, self._requests)
        finished = [0]  # passages whose vectors are in `out`, counted by the callbacks (one per stream thread)
        counting = threading.Lock()
        reported = 0

        def store(request, rows: list[int]) -> None:
            out[rows] = request.get_output_tensor(0).data
            with counting:
                finished[0] += len(rows)

        queue.set_callback(store)
        try:
            for first in range(0, len(order), REQUEST_BATCH):
                rows = order[first : first + REQUEST_BATCH]
                inputs = self._inputs([self.passage_prompt + texts[i] for i in rows])
                while not queue.is_ready():  # waiting here, not inside OpenVINO, lets Ctrl-C stop a build
                    time.sleep(IDLE_POLL_SECONDS)
                queue.start_async(inputs, rows)
                if progress and finished[0] - reported >= PROGRESS_EVERY:
                    done = finished[0]
                    progress(done - reported)
                    reported = done
        finally:
            queue.wait_all()  # no callback may write into `out` after this returns
        if finished[0] != len(texts):  # an interrupt that landed inside a callback: rows are missing
            raise KeyboardInterrupt
        if progress and len(texts) > reported:
            progress(len(texts) - reported)
        return out

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._tokenizer.count(texts)
