"""Similar items (GET /items/{id}/similar) on a train/test split: socialrec's neighbours of one
item, without and with the user, vs item-kNN computed in the same run, scored by the same
metric code.

    bench/quality --similar [--data data/lastfm-split] [--artifacts DIR | --trained DIR]
                  [--no-docs]

For every test user with train items, one of them is the query item (the seeded choice of the
truncated-history protocol at n = 1); the list is scored against the user's test items with
all their train items excluded (Recall@K, NDCG@K of app.offline.evaluate). socialrec ranks
through `Recommender.similar`, the code of the route: without the user, then personalised
(the user's blended taste and friends' engagement order the item's neighbours; the user's
parameters were chosen by the trainer on a validation split of train.csv). Baselines in the
same run, on the same users and query items: item-kNN (cosine of item columns of the binary
train matrix: the neighbours of the query item) and most popular. Writes the "Similar items"
section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset, load_test
from app.offline.evaluate import evaluate_similar, metrics_at, similar_queries
from bench import baselines
from bench.common import table

BEGIN, END = "<!-- similar:begin -->", "<!-- similar:end -->"
KS = (10, 20)
TARGETS = {"item": 1.0, "user": 1.2}  # × item-kNN, both metrics at 20


def run(data_dir: Path, artifacts: Path | None, trained: Path | None) -> dict[str, Any]:
    from app.serving.artifacts import ModelArtifacts
    from app.serving.pipeline import Recommender

    with tempfile.TemporaryDirectory(prefix="socialrec-bench-") as tmp:
        train_s = None
        if trained is None:
            import torch

            from app.offline.train import TrainConfig, train

            torch.set_num_threads(2)
            trained = artifacts or Path(tmp) / "model"
            started = time.perf_counter()
            train(data_dir, trained, TrainConfig(), progress=True)
            train_s = time.perf_counter() - started
        recommender = Recommender(ModelArtifacts.load(trained))
    data = load_dataset(data_dir, recommender.manifest.event_weights or DEFAULT_EVENT_WEIGHTS)
    test = {u: items for u, items in load_test(data_dir, data).items()
            if items and data.histories[u]}
    started = time.perf_counter()
    report = evaluate_similar(recommender, data, test, KS)
    evaluate_s = time.perf_counter() - started
    queries = similar_queries(data, test)
    known = {u: [(queries[u], 1.0)] for u in test}
    scorers = {"item-kNN (cosine of the query item's column)": baselines.knn_scorer(data),
               "most popular": baselines.popular_scorer(data)}
    base = {name: metrics_at(baselines.rank(scorer, data, test, known, max(KS)), KS,
                             data.n_items)
            for name, scorer in scorers.items()}
    return {"report": report, "baselines": base, "manifest": recommender.manifest,
            "train_s": train_s, "evaluate_s": evaluate_s, "data_dir": data_dir}


def section(result: dict[str, Any], machine: str, command: str) -> str:
    report, manifest = result["report"], result["manifest"]
    base = result["baselines"]
    knn = next(iter(base.values()))
    names = {"item": "socialrec, without the user", "user": "**socialrec, with user_id**"}
    metrics = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
    rows = [["method", "Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "R@20 / item-kNN",
             "N@20 / item-kNN", "target"]]
    met = []
    for key, label in names.items():
        m = report[key]
        ratios = [m[k] / knn[k] for k in ("recall@20", "ndcg@20")]
        met.append(f"{label.strip('*')}: {'met' if min(ratios) >= TARGETS[key] else 'missed'}")
        rows.append([label, *(f"{m[k]:.4f}" for k in metrics),
                     *(f"{r:.3f}" for r in ratios), f"≥ {TARGETS[key]}"])
    for name, m in base.items():
        rows.append([name, *(f"{m[k]:.4f}" for k in metrics),
                     f"{m['recall@20'] / knn['recall@20']:.3f}",
                     f"{m['ndcg@20'] / knn['ndcg@20']:.3f}", ""])
    p = manifest.similar
    val = manifest.metrics
    calls = 2 * report["users"]
    training = (f"training {result['train_s']:.0f} s (whole trainer, including the grids), "
                if result["train_s"] is not None else "")
    lines = [
        BEGIN,
        "## Similar items",
        "",
        f"Dataset `{result['data_dir'].name}`, {report['users']} test users with train items. "
        "For every user, one of their train items (seeded, the truncated-history protocol's "
        "choice at n = 1) is the query of `GET /items/{id}/similar`; the list is scored "
        "against the user's test items with all their train items excluded. socialrec ranks "
        "through `Recommender.similar` (the route's code); the baselines rank the same users "
        "and query items in the same run, scored by the same `app.offline.evaluate.metrics_at`.",
        "",
        table(rows),
        "",
        "Targets: " + "; ".join(met) + ".",
        "",
        f"Parameters (chosen by the trainer on its validation split of train.csv — each "
        f"validation user's neighbours of one kept item scored against their held-out items; "
        f"{int(val.get('val_similar_users', 0))} users): popularity weight of the neighbour "
        f"search {p.popularity_weight:g}, user weight {p.user_weight:g}, {p.candidates} "
        f"neighbours ordered. Validation R@20 / N@20: without the user "
        f"{val.get('val_similar_item_recall@20', float('nan')):.4f} / "
        f"{val.get('val_similar_item_ndcg@20', float('nan')):.4f}, with it "
        f"{val.get('val_similar_user_recall@20', float('nan')):.4f} / "
        f"{val.get('val_similar_user_ndcg@20', float('nan')):.4f}.",
        "",
        f"Model `{manifest.model_version}` (FAISS {manifest.index.kind}); {training}"
        f"evaluation {result['evaluate_s']:.0f} s for {calls} lists "
        f"({1000 * result['evaluate_s'] / max(calls, 1):.1f} ms each, including the users' "
        "encoding).",
        "",
        f"Machine: {machine}.",
        "",
        f"Command: `{command}`",
        END,
    ]
    return "\n".join(lines) + "\n"
