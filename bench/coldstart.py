"""New products (item cold start): socialrec's item text encoder vs text-profile baselines on a
new-product split, ranked among the new products only, scored by the same metric code.

    bench/quality --cold-items DATA_DIR [--artifacts DIR] [--no-docs]

DATA_DIR is a split written by `socialrec split DATA OUT --cold-items F` (train.csv, test.csv,
cold_items.txt, items.csv, social.csv). The model is trained with its default config on train.csv
(the new products have no interaction there: their vectors come from their text), evaluated by
app.offline.evaluate.evaluate, whose `cold_items` section ranks, for every test user with a
held-out interaction on a new product, the new products only through the serving pipeline. In
the same run and over the same users, random scores and a TF-IDF profile (word uni+bigrams of
title, category and tags; the user's profile is the log1p(weight)-weighted mean of their train
items' unit TF-IDF rows; cosine) rank the same items. Writes the "New products" section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import itertools
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import Dataset, load_dataset, load_test
from app.offline.evaluate import UserRanking, evaluate, metrics_at
from app.offline.split import read_cold_items
from app.offline.text import item_descriptions
from bench.common import table

BEGIN, END = "<!-- coldstart:begin -->", "<!-- coldstart:end -->"
KS = (10, 20)


def _rank_within(scores: np.ndarray, users: list[int], cold: np.ndarray,
                 test: dict[int, set[int]], k: int) -> list[UserRanking]:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [UserRanking(u, cold[top[row]].tolist(), test[u]) for row, u in enumerate(users)]


def tfidf(texts: list[str]) -> Any:
    """Unit-norm TF-IDF rows over word unigrams and bigrams (words of 2+ letters, lower case),
    sublinear tf, smoothed idf — the usual textbook recipe."""
    import scipy.sparse as sp

    vocabulary: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for row, text in enumerate(texts):
        words = re.findall(r"\b\w\w+\b", text.lower())
        terms = Counter(words + [f"{a} {b}" for a, b in itertools.pairwise(words)])
        for term, count in terms.items():
            rows.append(row)
            cols.append(vocabulary.setdefault(term, len(vocabulary)))
            vals.append(1.0 + np.log(count))
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocabulary)))
    df = np.bincount(matrix.indices, minlength=len(vocabulary))
    matrix = matrix @ sp.diags(np.log((1 + len(texts)) / (1 + df)) + 1.0)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix


def tfidf_profile(data: Dataset, users: list[int], cold: np.ndarray) -> np.ndarray:
    matrix = tfidf([d.text() for d in item_descriptions(data)]).tocsr()
    rows = []
    for u in users:
        h = data.histories[u]
        if not h:
            rows.append(np.zeros(matrix.shape[1]))
            continue
        w = np.log1p(np.asarray([max(x, 0.0) for _, x in h]))
        profile = np.asarray(matrix[[i for i, _ in h]].T @ w).ravel()
        rows.append(profile / max(np.linalg.norm(profile), 1e-12))
    return np.asarray(np.vstack(rows) @ matrix[cold].T.toarray())


def run(data_dir: Path, artifacts: Path | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(2)
    from app.offline.train import TrainConfig, train
    from app.serving.artifacts import ModelArtifacts
    from app.serving.pipeline import Recommender

    cold_ids = read_cold_items(data_dir)
    if cold_ids is None:
        raise SystemExit(f"error: {data_dir} has no cold_items.txt (socialrec split --cold-items)")
    with tempfile.TemporaryDirectory(prefix="socialrec-bench-") as tmp:
        out = artifacts or Path(tmp) / "model"
        started = time.perf_counter()
        manifest = train(data_dir, out, TrainConfig(), progress=True)
        train_s = time.perf_counter() - started
        recommender = Recommender(ModelArtifacts.load(out))
        data = load_dataset(data_dir, recommender.manifest.event_weights or
                            DEFAULT_EVENT_WEIGHTS)
        test = {u: items for u, items in load_test(data_dir, data).items() if items}
        cold = np.asarray(sorted(data.items.index[i] for i in cold_ids), dtype=np.int64)
        started = time.perf_counter()
        report = evaluate(recommender, data, test, KS, progress=True, cold_items=cold)
        evaluate_s = time.perf_counter() - started
        weight = sum(p.stat().st_size for p in out.iterdir())
    members = set(cold.tolist())
    cold_test = {u: items & members for u, items in test.items() if items & members}
    users = sorted(cold_test)
    baselines = {
        "TF-IDF profile (uni+bigrams, log1p-weighted mean, cosine)": metrics_at(
            _rank_within(tfidf_profile(data, users, cold), users, cold, cold_test, max(KS)),
            KS, len(cold)),
        "random": metrics_at(_rank_within(
            np.random.default_rng(0).random((len(users), len(cold))), users, cold, cold_test,
            max(KS)), KS, len(cold)),
    }
    return {"report": report, "baselines": baselines, "manifest": manifest,
            "train_s": train_s, "evaluate_s": evaluate_s, "artifact_bytes": weight,
            "data_dir": data_dir}


def section(result: dict[str, Any], machine: str, command: str) -> str:
    report, manifest = result["report"], result["manifest"]
    cold = report["cold_items"]
    tfidf = next(iter(result["baselines"].values()))
    rows = [["method (ranked among the new products only)", "Recall@10", "NDCG@10",
             "Recall@20", "NDCG@20", "R@20 / TF-IDF", "N@20 / TF-IDF"]]
    for name, m in [("socialrec: MiniLM (int8 ONNX) + labels → item vectors, full pipeline",
                     cold["full"]), *result["baselines"].items()]:
        rows.append([name] + [f"{m[k]:.4f}" for k in ("recall@10", "ndcg@10", "recall@20",
                                                       "ndcg@20")]
                    + [f"{m['recall@20'] / tfidf['recall@20']:.2f}",
                       f"{m['ndcg@20'] / tfidf['ndcg@20']:.2f}"])
    text = manifest.text
    val = manifest.metrics
    full = report["full"]
    lines = [
        BEGIN,
        "## New products (item cold start)",
        "",
        f"Split `{result['data_dir'].name}`: {cold['items']} new products held out with all "
        f"their interactions, {cold['users']} test users with a held-out interaction on one; "
        "each user ranks the new products only. socialrec ranks through the serving pipeline "
        "(`socialrec evaluate`'s `cold_items` section: the user's vector from their history and "
        "friends, the new products' vectors from their text alone); the baselines rank the same "
        "items for the same users in the same run, scored by the same "
        "`app.offline.evaluate.metrics_at`.",
        "",
        table(rows),
        "",
        f"Chosen on validation (a fifth of the trained items treated as new, users' vectors "
        f"without them; train.csv only): ridge {text.ridge:g}, label weight "
        f"{text.label_weight:g}. Validation Recall@20 + NDCG@20 of the "
        "held-out items by label weight (best ridge each; 0 = the sentence embedding alone): "
        + ", ".join(f"{k.rsplit('_', 1)[1]}: {v:.4f}" for k, v in val.items()
                    if k.startswith("val_cold_r+n@20_labels_"))
        + f". Encoder: {text.source}, {text.quantization}, {text.max_tokens} tokens at most."
        if text else "No text encoder in the artifacts.",
        "",
        f"The same model on the whole test set of this split (warm and new items ranked "
        f"together, {report['users']} users): R@20 {full['recall@20']:.4f}, N@20 "
        f"{full['ndcg@20']:.4f}.",
        "",
        f"Training {result['train_s']:.0f} s (including the text encoder's export or cache hit "
        f"and the catalogue's embeddings), evaluation {result['evaluate_s']:.0f} s; artifact "
        f"folder {result['artifact_bytes'] / 1e6:.1f} MB.",
        "",
        f"Machine: {machine}.",
        "",
        f"Command: `{command}`",
        END,
    ]
    return "\n".join(lines) + "\n"
