"""An experiment, not a backend yet: OpenVINO with NNCF's static int8 quantisation for passages.

`quantize` writes the exported ONNX graph quantised by NNCF (int8 weights and activations, calibrated on
`--calibration` passages of an existing index, past the sample that `bench/backends.py speed` measures; the rest in bf16 at run time) to `--out`. `index` and `eval` run
`rag index` / `rag eval` in this process with that graph registered as the experimental backend
`openvino-int8-experiment`: passages through the int8 graph, questions through ONNX Runtime fp32 (as `onnx-int8`
does), declared in fp32's vector space so an eval compares it with fp32 directly. Needs `pip install nncf` (not a
project dependency). Results of 2026-12-04: bench/results/2026-12-04-openvino-int8-experiment.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backends import PROMPTS, sample_texts  # noqa: E402
from rag.embeddings import create_embedder, register_backend  # noqa: E402
from rag.settings import Settings  # noqa: E402

BACKEND = "openvino-int8-experiment"
REQUEST_BATCH = 4  # the calibration inputs are shaped as the backend's requests


def quantize(model: Path, index: Path, passages: int, skip: int, out: Path) -> None:
    import nncf
    import openvino as ov

    from rag.onnx_embedder import exported_graph, fast_tokenizer

    tokenizer = fast_tokenizer(model)
    texts = sample_texts(index, skip + passages)[skip:]  # past the passages bench/backends.py speed measures
    batches = []
    for first in range(0, len(texts), REQUEST_BATCH):
        ids, mask = tokenizer.batch([PROMPTS["passage_prompt"] + t for t in texts[first:first + REQUEST_BATCH]])
        batches.append({"input_ids": ids, "attention_mask": mask})
    graph = ov.Core().read_model(str(exported_graph(model, BACKEND)))
    quantized = nncf.quantize(graph, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                              preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches))
    ov.save_model(quantized, str(out))
    print(f"wrote {out} (calibrated on {len(texts)} passages of {index})")


class Int8Passages:
    """The `Embedder` protocol: passages through the quantised graph, questions through ONNX Runtime fp32."""

    def __init__(self, graph: Path, model: str, **options):
        import rag.openvino_embedder as openvino_embedder

        exported = openvino_embedder.exported_graph
        openvino_embedder.exported_graph = lambda folder, backend: graph  # this one graph instead of the export
        try:
            self._passages = openvino_embedder.OpenVinoEmbedder(model, precision="bf16", **options)
        finally:
            openvino_embedder.exported_graph = exported
        self._questions = create_embedder("onnx", model, **options)
        self.backend = BACKEND
        self.model_id, self.dim = self._passages.model_id, self._passages.dim
        self.query_prompt, self.passage_prompt = self._passages.query_prompt, self._passages.passage_prompt

    def encode_passages(self, texts, progress=None):
        return self._passages.encode_passages(texts, progress)

    def encode_queries(self, texts):
        return self._questions.encode_queries(texts)

    def count_tokens(self, texts):
        return self._passages.count_tokens(texts)


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["quantize", "index", "eval"])
    parser.add_argument("--graph", type=Path, default=settings.cache / "openvino-int8" / "model.xml")
    parser.add_argument("--model", type=Path, default=Path(settings.model))
    parser.add_argument("--index", type=Path, help="quantize: the index whose passages calibrate")
    parser.add_argument("--calibration", type=int, default=300, help="quantize: passages that calibrate")
    parser.add_argument("--skip", type=int, default=512,
                        help="quantize: the first passages of the index's shuffled sample left out of calibration")
    args, rest = parser.parse_known_args()
    if args.command == "quantize":
        args.graph.parent.mkdir(parents=True, exist_ok=True)
        quantize(args.model, args.index, args.calibration, args.skip, args.graph)
        return
    register_backend(BACKEND, lambda model, **kw: Int8Passages(args.graph, model, **kw), vector_space="fp32")
    from rag.cli import main as rag

    sys.argv = ["rag", args.command, "--embedding-backend", BACKEND, *rest] if args.command == "index" else \
        ["rag", args.command, *rest]
    if args.command == "eval":
        import os

        os.environ["RAG_EMBEDDING_BACKEND"] = BACKEND  # `rag eval` takes the backend from the settings
    rag()


if __name__ == "__main__":
    main()
