"""`socialrec split`: a reproducible train/test split of a dataset folder.

* Per user: a seeded `test_fraction` of the user's distinct items goes to test with every row of
  those (user, item) pairs; at least one item stays in train, so a user with a single item keeps
  it. Each user draws from their own stream (seed, user id), so a user's split does not change
  when other users are added or removed.
* New products (`cold_items`): first a seeded fraction of the interacted items is drawn; every
  interaction with them goes to test, and their ids are written to `cold_items.txt`. The per-user
  split then runs over the remaining (warm) pairs; `test_fraction 0` holds out the cold items only.

`social.csv` and `items.csv` are copied beside `train.csv` and `test.csv`, so the output folder is
a complete dataset for `socialrec train` and `socialrec evaluate`. Rows are written as parsed:
bad rows are skipped (and reported) exactly as loading the dataset would skip them.
"""

from __future__ import annotations

import csv
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.offline.dataset import (
    INTERACTION_COLUMNS,
    DataError,
    InteractionRow,
    read_interactions,
)

COLD_ITEMS_FILE = "cold_items.txt"
COPIED = ("social.csv", "items.csv")


@dataclass(frozen=True)
class SplitSummary:
    users: int
    train_rows: int
    test_rows: int
    test_users: int
    cold_items: int

    def __str__(self) -> str:
        text = (f"{self.train_rows} train rows, {self.test_rows} test rows "
                f"({self.test_users} of {self.users} users in test)")
        return text + (f", {self.cold_items} cold items" if self.cold_items else "")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise DataError(f"{name} must be at least 0 and below 1, got {value}")


def choose_cold_items(rows: Iterable[InteractionRow], fraction: float, seed: int) -> set[str]:
    """A seeded `fraction` of the interacted items (at least one; at least one stays warm)."""
    items = sorted({r.item_id for r in rows})
    if len(items) < 2:
        raise DataError(f"cold items need at least 2 interacted items, the data has {len(items)}")
    n = min(len(items) - 1, max(1, round(fraction * len(items))))
    pick = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
    return {items[i] for i in pick.tolist()}


def _user_rng(seed: int, user_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(user_id.encode("utf-8"))])


def held_out_pairs(rows: Iterable[InteractionRow], fraction: float,
                   seed: int) -> set[tuple[str, str]]:
    """(user, item) pairs that go to test: `fraction` of each user's distinct items, rounded,
    at least one when the user has two or more, never all."""
    per_user: dict[str, dict[str, None]] = {}  # insertion-ordered distinct items
    for r in rows:
        per_user.setdefault(r.user_id, {})[r.item_id] = None
    held: set[tuple[str, str]] = set()
    if fraction <= 0:
        return held
    for user, items in per_user.items():
        n = len(items)
        k = min(n - 1, max(1, round(fraction * n))) if n >= 2 else 0
        if k <= 0:
            continue
        ordered = list(items)
        for j in _user_rng(seed, user).choice(n, size=k, replace=False).tolist():
            held.add((user, ordered[j]))
    return held


def _number(value: float | None) -> str:
    """The shortest text that reads back as the same number (integers without '.0')."""
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def write_interactions(path: Path, rows: Iterable[InteractionRow]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(INTERACTION_COLUMNS)
        for r in rows:
            writer.writerow((r.user_id, r.item_id, r.event, _number(r.value),
                             _number(r.timestamp)))
            count += 1
    return count


def split_dataset(data_dir: Path, out_dir: Path, test_fraction: float = 0.2, seed: int = 0,
                  cold_items: float = 0.0) -> SplitSummary:
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    _check_fraction("--test-fraction", test_fraction)
    _check_fraction("--cold-items", cold_items)
    if test_fraction == 0 and cold_items == 0:
        raise DataError("nothing to hold out: --test-fraction and --cold-items are both 0")
    source = data_dir / "interactions.csv"
    if not source.is_file():
        raise DataError(f"{source}: not found (split reads a dataset's interactions.csv)")
    if out_dir.resolve() == data_dir.resolve():
        raise DataError(f"OUT_DIR {out_dir} is DATA_DIR: write the split to another folder")
    rows = read_interactions(source)
    if not rows:
        raise DataError(f"{source}: no interactions to split")
    cold = choose_cold_items(rows, cold_items, seed) if cold_items > 0 else set()
    warm = [r for r in rows if r.item_id not in cold]
    held = held_out_pairs(warm, test_fraction, seed)

    def to_test(r: InteractionRow) -> bool:
        return r.item_id in cold or (r.user_id, r.item_id) in held

    out_dir.mkdir(parents=True, exist_ok=True)
    n_train = write_interactions(out_dir / "train.csv", (r for r in rows if not to_test(r)))
    n_test = write_interactions(out_dir / "test.csv", (r for r in rows if to_test(r)))
    for name in COPIED:
        if (data_dir / name).is_file():
            shutil.copyfile(data_dir / name, out_dir / name)
    cold_file = out_dir / COLD_ITEMS_FILE
    if cold:
        cold_file.write_text("".join(f"{i}\n" for i in sorted(cold)), encoding="utf-8")
    else:  # a stale list from an earlier split would turn on the cold-item evaluation
        cold_file.unlink(missing_ok=True)
    return SplitSummary(users=len({r.user_id for r in rows}), train_rows=n_train,
                        test_rows=n_test, test_users=len({r.user_id for r in rows if to_test(r)}),
                        cold_items=len(cold))


def read_cold_items(data_dir: Path) -> list[str] | None:
    """The cold item ids of a new-product split, or None when the folder has no list."""
    path = Path(data_dir) / COLD_ITEMS_FILE
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
