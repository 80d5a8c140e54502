"""Write an artifact folder (SPEC §5) atomically: build in a sibling temp folder, then rename.

The ONNX encoder is written by a callback (the trainer owns PyTorch); everything else — FAISS
index, item map, popularity, manifest — is written here.
"""

from __future__ import annotations

import hashlib
import json
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

FLAT_MAX_ITEMS = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 256


def build_index(vectors: np.ndarray, flat_max_items: int = FLAT_MAX_ITEMS) -> tuple[
        faiss.Index, IndexInfo]:
    """Exact inner-product search for small catalogues; HNSW above `flat_max_items`."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    d = vectors.shape[1]
    if len(vectors) <= flat_max_items:
        index = faiss.IndexFlatIP(d)
        info = IndexInfo(kind="flat")
    else:
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        info = IndexInfo(kind="hnsw", params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION,
                                              "efSearch": HNSW_EF_SEARCH})
    index.add(vectors)
    return index, info


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
                     metrics: dict[str, float], flat_max_items: int = FLAT_MAX_ITEMS) -> Manifest:
    """`write_encoder(folder)` writes the ONNX file(s) and returns the file name to load."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    encoder_file = write_encoder(tmp)
    index, info = build_index(item_vectors, flat_max_items)
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
