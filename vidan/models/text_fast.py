"""all-MiniLM-L6-v2 in numpy: the same sentence embeddings as ``vidan.models.text``, with
no torch, transformers or sentence-transformers to import.

Importing sentence-transformers alone takes about six seconds on a cold start, which is
more than a search may take in all. A query is a handful of tokens through six small
BERT layers: numpy does that in milliseconds. The weights are the bundled safetensors
file, the tokenizer is the model folder's own ``tokenizer.json`` (the Rust ``tokenizers``
library), and the recipe is sentence-transformers': at most 256 tokens, mean pooling over
the attention mask, L2 normalisation. ``tests/test_index.py`` holds it to cosine > 0.999
against the sentence-transformers encoder.
"""

from __future__ import annotations

import functools

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

MAX_TOKENS = 256  # sentence_bert_config.json of the bundled model


class FastTextEncoder:
    """``encode(list[str]) -> float32 (N, 384)``, as ``TextEncoder.encode``."""

    def __init__(self, folder: Path, model_id: str):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("model_type") != "bert":
            raise ValueError(f"{folder} holds a {cfg.get('model_type')!r} model; the numpy encoder runs BERT only")
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.dim = int(cfg["hidden_size"])
        self.model_id = model_id
        w = load_file(str(folder / "model.safetensors"))
        self._w = {k.removeprefix("bert."): v for k, v in w.items()}
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json pads every text to 128; sentence-transformers pads to the longest
        # text of the batch and cuts at its own max_seq_length
        limit = MAX_TOKENS
        sbert = folder / "sentence_bert_config.json"
        if sbert.is_file():
            limit = int(json.loads(sbert.read_text()).get("max_seq_length", MAX_TOKENS))
        tok.no_padding()
        tok.enable_truncation(limit)
        self._tok = tok

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 (N, dim), each row L2-normalised, so a dot product is the cosine."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not one string")
        with blas_threads(1 if len(texts) <= 16 else None):
            return self._encode(texts, batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        # similar lengths together: padding costs compute, and the mask keeps results exact
        encs = self._tok.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            n = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), np.int64)
            types = np.zeros((len(idx), n), np.int64)
            mask = np.zeros((len(idx), n), np.float32)
            for r, i in enumerate(idx):
                e = encs[i]
                ids[r, :len(e.ids)] = e.ids
                types[r, :len(e.ids)] = e.type_ids
                mask[r, :len(e.ids)] = 1.0
            out[idx] = self._forward(ids, types, mask)
        return out

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self._w
        b, n = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
             + w["embeddings.position_embeddings.weight"][:n][None])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        h, d = self.heads, self.dim // self.heads
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]  # padded keys get no attention
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(name):
                y = _dense(x, w[p + name + ".weight"], w[p + name + ".bias"])
                return y.reshape(b, n, h, d).transpose(0, 2, 1, 3)

            q, k, v = split("attention.self.query"), split("attention.self.key"), split("attention.self.value")
            att = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(d)) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            a = _dense(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
            x = _layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                            self.eps)
            m = _gelu(_dense(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            m = _dense(m, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = _layer_norm(m + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)


def blas_threads(n: Optional[int]):
    """BLAS on ``n`` threads inside the block. A query's matrices are tiny: OpenBLAS's
    threads only wait on each other, 15 ms a query becomes 200 ms on a busy machine."""
    from contextlib import nullcontext

    return nullcontext() if n is None else _threadpools().limit(limits=n, user_api="blas")


@functools.lru_cache(maxsize=1)
def _threadpools():
    # finding the loaded BLAS libraries walks every shared object of the process (about
    # 2 ms): once, not per query; numpy's BLAS is loaded by then
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ weight.T + bias


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact gelu (erf), not the tanh approximation
    return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26, good to 1.5e-7: below float32 rounding of the activations
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return (np.sign(x) * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


def load_fast_text_encoder(path: Optional[str] = None) -> FastTextEncoder:
    """The bundled MiniLM (or a BERT sentence-transformers folder at ``path``) in numpy;
    ``model_id`` is the one ``vidan.models.text.load_text_encoder`` gives the same model."""
    import importlib.metadata

    from vidan.models.text import DIST, MODEL_NAME, bundled_model_path

    folder = Path(path).expanduser() if path else bundled_model_path()
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors in sentence-transformers model folder {folder}")
    if path:
        model_id = f"sentence-transformers:{folder.resolve()}"
    else:
        model_id = f"{MODEL_NAME}@{DIST}=={importlib.metadata.version(DIST)}"
    return FastTextEncoder(folder, model_id)
