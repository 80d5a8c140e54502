"""Write an artifact folder (SPEC §5) atomically: build in a sibling temp folder, then rename.

The ONNX encoder is written by a callback (the trainer owns PyTorch); everything else — FAISS
index, item map, popularity, manifest — is written here.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from app.offline.dataset import Dataset
from app.serving.artifacts import (
    FORMAT_VERSION,
    MANIFEST,
    BlendParams,
    IndexInfo,
    Manifest,
    RerankParams,
)

# Index choice, measured by bench/scale (docs/BENCHMARKS.md, "Catalogue scale") on clustered
# item vectors of the real model's shape (ALS factors + a bias dimension, inner product):
# - exact search up to FLAT_MAX_ITEMS: a flat scan costs ~8 ns per item and query, 0.15 ms
#   at 20k items but 3 ms at 200k;
# - above it IVF-Flat, nlist ≈ 4·√n, with the smallest nprobe whose recall@200 against exact
#   search reaches IVF_TARGET_RECALL, measured at export with the trainer's user vectors as
#   queries (the nprobe needed varies from nlist/4 at 20k items to nlist/32 at 200k; items as
#   queries are a poor stand-in: they ask for 8-16 × more lists than users do);
# - HNSW (inner product) is kept as an option but not the default: on these vectors, whose
#   norms vary 100-fold, its recall@200 stalls below 0.95 however large efSearch is.
FLAT_MAX_ITEMS = 50_000
IVF_TARGET_RECALL = 0.96
IVF_CALIBRATION_QUERIES = 256
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256
INDEX_KINDS = ("flat", "ivf", "hnsw")


def ivf_nlist(n: int) -> int:
    """Lists of an IVF index over n vectors: the power of two nearest 4·√n (at least 64)."""
    return max(64, 1 << round(math.log2(4 * math.sqrt(n))))


def build_index(vectors: np.ndarray, flat_max_items: int = FLAT_MAX_ITEMS,
                kind: str | None = None,
                queries: np.ndarray | None = None) -> tuple[faiss.Index, IndexInfo]:
    """Exact inner-product search up to `flat_max_items`, IVF-Flat above; `kind` forces one of
    INDEX_KINDS. `queries` (typical user vectors) calibrate IVF's nprobe; without them a
    sample of the items stands in (a higher, safe nprobe)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    kind = kind or ("flat" if n <= flat_max_items else "ivf")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        info = IndexInfo(kind="flat")
    elif kind == "ivf":
        nlist = min(ivf_nlist(n), max(1, n // 39))  # k-means wants ≥ 39 points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        index.nprobe = calibrate_nprobe(index, vectors, queries=queries)
        return index, IndexInfo(kind="ivf", params={"nlist": nlist, "nprobe": index.nprobe})
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        info = IndexInfo(kind="hnsw", params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION,
                                              "efSearch": HNSW_EF_SEARCH})
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    index.add(vectors)
    return index, info


def calibrate_nprobe(index: faiss.Index, vectors: np.ndarray, k: int = 200,
                     target: float = IVF_TARGET_RECALL,
                     queries: np.ndarray | None = None) -> int:
    """The smallest nprobe on a √2-step grid whose recall@k against exact search reaches
    `target` for (a sample of) `queries`, else for a sample of the indexed vectors."""
    rng = np.random.default_rng(1)
    pool = vectors if queries is None or not len(queries) else queries
    pick = rng.choice(len(pool), min(IVF_CALIBRATION_QUERIES, len(pool)), replace=False)
    xq = np.ascontiguousarray(pool[np.sort(pick)], dtype=np.float32)
    k = min(k, len(vectors))
    _, truth = faiss.knn(xq, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    grid = sorted({min(index.nlist, round(2 ** (i / 2))) for i in range(64)})
    for nprobe in grid:
        index.nprobe = nprobe
        _, found = index.search(xq, k)
        hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
        if hits >= target * truth.size:
            return nprobe
    return index.nlist


def fingerprint(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def item_records(data: Dataset) -> list[dict[str, str]]:
    records = []
    for idx, item_id in enumerate(data.items.ids):
        meta = data.item_meta.get(idx)
        record = {"item_id": item_id}
        if meta is not None:
            record |= {"title": meta.title, "category": meta.category, "tags": ";".join(meta.tags)}
        records.append(record)
    return records


def popularity(data: Dataset) -> np.ndarray:
    """How many users interacted with each item — the fallback ranking."""
    counts = np.zeros(data.n_items, dtype=np.float32)
    for history in data.histories:
        for item, _ in history:
            counts[item] += 1.0
    return counts


def export_artifacts(out_dir: Path, *, data: Dataset, item_vectors: np.ndarray,
                     write_encoder: Callable[[Path], str], max_history: int,
                     blend: BlendParams, rerank: RerankParams, event_weights: dict[str, float],
                     data_fingerprint: str, model_info: dict[str, float | int | str],
                     metrics: dict[str, float], flat_max_items: int = FLAT_MAX_ITEMS,
                     queries: np.ndarray | None = None) -> Manifest:
    """`write_encoder(folder)` writes the ONNX file(s) and returns the file name to load;
    `queries` (user vectors) tune an approximate index (see build_index)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    encoder_file = write_encoder(tmp)
    index, info = build_index(item_vectors, flat_max_items, queries=queries)
    faiss.write_index(index, str(tmp / info.file))
    (tmp / "items.json").write_text(json.dumps(item_records(data), ensure_ascii=False),
                                    encoding="utf-8")
    np.save(tmp / "popularity.npy", popularity(data), allow_pickle=False)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_version=_model_version(tmp, blend.model_dump_json() + rerank.model_dump_json()),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        embedding_dim=int(item_vectors.shape[1]), item_count=int(item_vectors.shape[0]),
        max_history=max_history, training_data_fingerprint=data_fingerprint,
        encoder_file=encoder_file, index=info, blend=blend, rerank=rerank,
        event_weights=event_weights, model=model_info, metrics=metrics,
    )
    (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _model_version(folder: Path, params: str) -> str:
    """Content hash of the model files and serving parameters: the same model always gets the
    same version, and any change gets a new one."""
    digest = hashlib.sha256(params.encode())
    for path in sorted(folder.iterdir()):
        digest.update(path.read_bytes())
    return "m-" + digest.hexdigest()[:12]
