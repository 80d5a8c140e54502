"""`socialrec split`: per-user seeded split, new-product split, clear errors."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from app.cli import main
from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset, load_test
from app.offline.split import read_cold_items


def _pairs(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    with path.open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            out[r["user_id"]].add(r["item_id"])
    return out


def _rows(path: Path) -> list[tuple[str, ...]]:
    with path.open(encoding="utf-8") as fh:
        return sorted(tuple(r.values()) for r in csv.DictReader(fh))


def test_per_user_split_is_seeded_and_keeps_every_row(synth_dir: Path, tmp_path: Path) -> None:
    assert main(["split", str(synth_dir), str(tmp_path / "a"), "--seed", "4"]) == 0
    assert main(["split", str(synth_dir), str(tmp_path / "b"), "--seed", "4"]) == 0
    assert main(["split", str(synth_dir), str(tmp_path / "c"), "--seed", "5"]) == 0
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert (a / "train.csv").read_bytes() == (b / "train.csv").read_bytes()
    assert (a / "test.csv").read_bytes() == (b / "test.csv").read_bytes()
    assert (a / "test.csv").read_bytes() != (c / "test.csv").read_bytes()
    # every row lands on exactly one side, values unchanged
    assert sorted(_rows(a / "train.csv") + _rows(a / "test.csv")) == _rows(
        synth_dir / "interactions.csv")
    train, test, whole = _pairs(a / "train.csv"), _pairs(a / "test.csv"), _pairs(
        synth_dir / "interactions.csv")
    held = total = 0
    for user, items in whole.items():
        assert not train[user] & test[user], "a (user, item) pair is split across both sides"
        if len(items) >= 2:
            assert train[user], f"{user} lost their whole history to test"
        held += len(test[user])
        total += len(items)
    assert held / total == pytest.approx(0.2, abs=0.02)
    assert not (a / "cold_items.txt").exists()
    for name in ("social.csv", "items.csv"):
        assert (a / name).read_bytes() == (synth_dir / name).read_bytes()


def test_cold_items_go_to_test_with_all_their_interactions(synth_dir: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "cold"
    assert main(["split", str(synth_dir), str(out), "--cold-items", "0.25",
                 "--test-fraction", "0"]) == 0
    cold = set(read_cold_items(out) or [])
    interacted = {i for items in _pairs(synth_dir / "interactions.csv").values() for i in items}
    assert cold <= interacted
    assert len(cold) == round(0.25 * len(interacted))
    train_items = {i for items in _pairs(out / "train.csv").values() for i in items}
    test_items = {i for items in _pairs(out / "test.csv").values() for i in items}
    assert not cold & train_items
    assert test_items == cold  # test-fraction 0: only the new products are held out
    # the folder is a complete dataset: the model side loads it, cold items stay in the catalogue
    data = load_dataset(out, DEFAULT_EVENT_WEIGHTS)
    assert cold <= set(data.items.ids)
    assert load_test(out, data)


def test_cold_items_compose_with_the_per_user_split(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "both"
    assert main(["split", str(synth_dir), str(out), "--cold-items", "0.2"]) == 0
    cold = set(read_cold_items(out) or [])
    test_items = {i for items in _pairs(out / "test.csv").values() for i in items}
    assert cold < test_items  # cold items plus a share of every user's warm items
    # splitting again without cold items removes the stale list
    assert main(["split", str(synth_dir), str(out)]) == 0
    assert read_cold_items(out) is None


@pytest.mark.parametrize(("args", "names"), [
    (["--test-fraction", "1"], "--test-fraction"),
    (["--cold-items", "-0.1"], "--cold-items"),
    (["--cold-items", "nan"], "--cold-items"),
    (["--test-fraction", "0"], "--test-fraction"),
])
def test_bad_fractions_get_one_clear_line(args: list[str], names: str, synth_dir: Path,
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["split", str(synth_dir), str(tmp_path / "out"), *args]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and names in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_interactions_and_same_folder_are_refused(
        synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["split", str(tmp_path), str(tmp_path / "out")]) != 0
    assert "interactions.csv" in capsys.readouterr().err
    assert main(["split", str(synth_dir), str(synth_dir)]) != 0
    assert "OUT_DIR" in capsys.readouterr().err
