"""End to end on a synthetic dataset with a planted social effect: train → export → load →
evaluate through the serving pipeline; the social blend must beat the model without it."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from app.cli import main
from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset, load_test
from app.offline.evaluate import evaluate
from app.offline.synth import write_synthetic_dataset
from app.offline.train import TrainConfig, carve_validation, train
from app.serving.artifacts import ModelArtifacts
from app.serving.pipeline import Recommender
from tests.support.browser import chromium, images_loaded

SMALL = TrainConfig(dim=32, iterations=12, patience=3, epochs=40,
                    match_weights="0,0.5")


def split_dataset(source: Path, out: Path, fraction: float = 0.2, seed: int = 0) -> Path:
    """train.csv/test.csv from interactions.csv: per user, a random `fraction` of the items
    (all rows of those user-item pairs) goes to test."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("social.csv", "items.csv"):
        shutil.copy(source / name, out / name)
    with (source / "interactions.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    items: dict[str, list[str]] = {}
    for row in rows:
        seen = items.setdefault(row[0], [])
        if row[1] not in seen:
            seen.append(row[1])
    rng = np.random.default_rng(seed)
    test_pairs = set()
    for user, user_items in items.items():
        n = round(fraction * len(user_items))
        if len(user_items) >= 2 and n >= 1:
            test_pairs |= {(user, user_items[j]) for j in rng.choice(len(user_items), n,
                                                                   replace=False)}
    for name, keep in (("train.csv", False), ("test.csv", True)):
        with (out / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(r for r in rows if ((r[0], r[1]) in test_pairs) == keep)
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root / "raw", n_users=600, n_items=1200, seed=0)
    return split_dataset(root / "raw", root / "split")


@pytest.fixture(scope="module")
def trained(split: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("artifacts") / "model"
    manifest = train(split, out, SMALL, progress=False)
    return manifest, out


@pytest.mark.slow
def test_train_export_evaluate_social_beats_no_social(split: Path, trained) -> None:
    manifest, out = trained
    recommender = Recommender(ModelArtifacts.load(out))
    data = load_dataset(split, DEFAULT_EVENT_WEIGHTS)
    report = evaluate(recommender, data, load_test(split, data), progress=False)
    full, no_social = report["full"], report["no_social"]
    assert full["recall@20"] > no_social["recall@20"], report
    assert full["recall@20"] > 0.05
    # the learned blend is what carries the planted effect, most of all for short histories
    assert manifest.bands[0].friend_weight > 0.0
    assert report["users"] > 100
    buckets = report["buckets"]
    assert sum(b["users"] for b in buckets.values()) == report["users"]
    assert all(b["social_changes_hits"]["more"] + b["social_changes_hits"]["fewer"] <= b["users"]
               for b in buckets.values())
    truncated = report["truncated"]
    assert list(truncated) == ["0", "1", "2", "3", "5"]
    eligible = sum(len(data.histories[u]) >= 5 for u, items in load_test(split, data).items()
                   if items)
    for entry in truncated.values():
        assert entry["users"] == eligible > 100
        assert set(entry) >= {"full", "no_social", "social_gain"}
    # friends only: the blend ranks better than the popularity fallback it replaces
    assert truncated["0"]["social_gain"]["recall@20"]["low"] > 0


@pytest.mark.slow
def test_manifest_records_training(trained, split: Path) -> None:
    manifest, out = trained
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["training_data_fingerprint"].startswith("sha256:")
    assert manifest.max_history == SMALL.max_history
    assert manifest.embedding_dim == SMALL.dim + 1
    assert manifest.item_count == load_dataset(split, DEFAULT_EVENT_WEIGHTS).n_items
    for key in ("val_recall@20", "val_ndcg@20", "val_no_social_recall@20", "train_seconds",
                "val_band0_recall@20", "val_band1_no_social_recall@20"):
        assert key in manifest.metrics
    assert [b.min_items for b in manifest.bands] == [0, 1, 2, 3, 5, 10, 20]
    assert manifest.model["architecture"] == "als-foldin"
    assert manifest.metrics["val_users"] > 0
    # the ALS iterations: chosen within the budget, on the ALS validation sample
    assert manifest.model["iteration_budget"] == SMALL.iterations
    assert 1 <= manifest.model["iterations"] == manifest.metrics["als_iterations"] \
        <= manifest.metrics["als_iterations_run"] <= SMALL.iterations
    assert 0 < manifest.metrics["val_als_users"] <= min(manifest.metrics["val_users"],
                                                        SMALL.als_validation_users)
    # every stage before the export has its seconds and peak memory in the report
    stages = ("load", "prepare", "als", "bands", "text", "match", "refit")
    seconds = [manifest.metrics[f"seconds_{s}"] for s in stages]
    assert all(s > 0 for s in seconds)
    assert sum(seconds) <= manifest.metrics["train_seconds"]
    assert all(manifest.metrics[f"peak_rss_mb_{s}"] > 10 for s in stages)


def test_training_never_reads_test_csv(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "raw", n_users=60, n_items=80, seed=1)
    folder = split_dataset(tmp_path / "raw", tmp_path / "split")
    (folder / "test.csv").write_text("garbage that would fail to parse\n")
    cfg = TrainConfig(dim=8, iterations=3, epochs=5, match_weights="0")
    manifest = train(folder, tmp_path / "model", cfg, progress=False)
    assert ModelArtifacts.load(tmp_path / "model").manifest.model_version == \
        manifest.model_version


def test_train_command_reports_every_stage_with_its_seconds_and_memory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_dataset(tmp_path / "raw", n_users=60, n_items=80, seed=1)
    assert main(["train", str(tmp_path / "raw"), "--out", str(tmp_path / "model"), "--dim",
                 "8", "--iterations", "3", "--epochs", "5", "--match-weights", "0"]) == 0
    stages = capsys.readouterr().out.splitlines()[-1]
    assert stages.startswith("stages (wall seconds, peak resident MB): ")
    for stage in ("load", "prepare", "als", "bands", "text", "match", "refit", "export"):
        assert re.search(rf"\b{stage} \d+\.\d s \d+ MB", stages), (stage, stages)


def test_tiny_dataset_without_validation_users(tmp_path: Path) -> None:
    """Every user has one item: nothing can be held out, training still exports a model."""
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,event,value,timestamp\n"
        "u1,a,view,,1\nu2,b,purchase,,2\nu3,a,click,,3\n", encoding="utf-8")
    (tmp_path / "social.csv").write_text("user_id,friend_id,weight\nu1,u2,1\nu2,u1,\n",
                                         encoding="utf-8")
    cfg = TrainConfig(dim=4, iterations=2, epochs=3)
    manifest = train(tmp_path, tmp_path / "model", cfg, progress=False)
    assert manifest.metrics["val_users"] == 0
    assert manifest.item_count == 2
    recommender = Recommender(ModelArtifacts.load(tmp_path / "model"))
    data = load_dataset(tmp_path, DEFAULT_EVENT_WEIGHTS)
    from app.serving.encode import History
    from app.serving.pipeline import Query, UserState

    rec = recommender.recommend(UserState(history=History.of(data.histories[0])), Query(k=2))
    assert len(rec.items) == 1  # two items, one seen
    assert np.isfinite(rec.items[0].score)


def test_carve_validation_keeps_at_least_one_item() -> None:
    histories = [[], [(0, 1.0)], [(0, 1.0), (1, 1.0)], [(i, 1.0) for i in range(10)]]
    kept, held = carve_validation(histories, 0.2, seed=0)
    assert kept[0] == [] and kept[1] == [(0, 1.0)]
    assert len(kept[2]) == 1 and len(held[2]) == 1
    assert len(kept[3]) == 8 and len(held[3]) == 2
    assert set(held) == {2, 3}
    for u, items in held.items():
        assert not items & {i for i, _ in kept[u]}
    again = carve_validation(histories, 0.2, seed=0)
    assert again == (kept, held)


@pytest.mark.slow
def test_evaluate_report_is_one_file_whose_plots_render_offline(split: Path, trained,
                                                                 tmp_path: Path) -> None:
    _, out = trained
    assert main(["evaluate", str(out), str(split), "--json", str(tmp_path / "report.json"),
                 "--report", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["curves"]) == {"full", "no_social", "no_rerank"}
    assert report["curves"]["full"]["recall@50"] >= report["full"]["recall@20"]
    assert 0 < report["full"]["popular_share@20"] < 1
    for bucket in report["buckets"].values():
        gain = bucket["social_gain"]["recall@20"]
        assert gain["low"] <= gain["mean"] <= gain["high"]
    page = tmp_path / "report" / "report.html"
    with chromium() as browser:
        loaded, requested = images_loaded(browser, page)
    assert len(loaded) == page.read_text().count("<img ") >= 3
    assert all(loaded), loaded
    assert [url for url in requested if not url.startswith("data:")] == [page.as_uri()]


def test_evaluate_report_into_a_file_is_one_line_error(split: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main(["evaluate", str(tmp_path), str(split), "--report", str(taken)]) == 2
    assert capsys.readouterr().err == f"error: --report {taken} is a file, not a folder\n"
