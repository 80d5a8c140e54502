"""Read a dataset folder in the docs/DATA.md layout into dense-indexed arrays.

Bad rows are reported with file and line; a few are skipped with a warning, a file that is
mostly bad (or has the wrong header) is rejected, never half-loaded silently.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from app.events import ID_RE, event_weight
from app.store.redis_store import tie_rank

log = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "event", "value", "timestamp")
SOCIAL_COLUMNS = ("user_id", "friend_id", "weight")
ITEM_COLUMNS = ("item_id", "title", "category", "tags")
MAX_BAD_FRACTION = 0.1


class DataError(ValueError):
    """A dataset file cannot be used; the message names the file and the lines."""


@dataclass(frozen=True, slots=True)
class InteractionRow:
    user_id: str
    item_id: str
    event: str
    value: float | None
    timestamp: float | None


@dataclass(frozen=True, slots=True)
class SocialRow:
    user_id: str
    friend_id: str
    weight: float


@dataclass(frozen=True, slots=True)
class ItemMeta:
    title: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()


class IdMap:
    """Opaque string ids ↔ dense indices, in first-seen order."""

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        for i in ids or []:
            self.add(i)

    def add(self, key: str) -> int:
        idx = self.index.get(key)
        if idx is None:
            idx = self.index[key] = len(self.ids)
            self.ids.append(key)
        return idx

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Dataset:
    """Histories and friendships over dense indices.

    `histories[u]` is a list of (item index, weight), most recent first, one entry per item;
    `friends[u]` a list of (user index, tie weight), in the service's order (strongest tie
    first, equal ties by friend id: `tie_rank`), so the first `max_friends` are the ones the
    service blends.
    """

    users: IdMap
    items: IdMap
    histories: list[list[tuple[int, float]]]
    friends: list[list[tuple[int, float]]]
    item_meta: dict[int, ItemMeta] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


def item_counts(histories: list[list[tuple[int, float]]], n_items: int) -> np.ndarray:
    """How many users interacted with each item (float32, one entry per item index): the
    popularity ranking and the model's popularity feature."""
    counts = np.zeros(n_items, dtype=np.float32)
    for history in histories:
        if history:
            np.add.at(counts, [i for i, _ in history], 1.0)
    return counts


def _check_id(value: str, column: str) -> str:
    if not ID_RE.fullmatch(value):  # match() would accept a trailing newline ("u1\n")
        raise ValueError(f"{column} {value!r} is not a valid id ([A-Za-z0-9_.:-]{{1,128}})")
    return value


def _optional_number(value: str, column: str) -> float | None:
    if value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{column} {value!r} is not a finite number")
    return number


def _first_undecodable_line(path: Path) -> int:
    """Decoding happens in chunks ahead of the CSV reader, so find the real line for the report."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _read_rows(path: Path, columns: tuple[str, ...], parse: Callable[[dict[str, str]], Any],
               required: tuple[str, ...] | None = None) -> Iterator[Any]:
    """Yield parsed rows; collect bad ones and reject the file if too many are bad."""
    required = required or columns
    bad: list[str] = []
    total = 0
    # utf-8-sig: a byte-order mark (Excel exports) must not hide the first column's name.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}:1: header {header} lacks column(s) {missing}; "
                                f"expected {','.join(columns)}")
            for row in reader:
                total += 1
                line = reader.line_num
                try:
                    if None in row or any(row.get(c) is None for c in required):
                        raise ValueError(f"expected {len(header)} fields")
                    yield parse(row)
                except ValueError as exc:
                    bad.append(f"{path}:{line}: {exc}")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{_first_undecodable_line(path)}: not UTF-8 text "
                            f"({exc.reason})") from None
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({exc})") from None
    if not bad:
        return
    if len(bad) > MAX_BAD_FRACTION * max(total, 1):
        shown = "\n  ".join(bad[:10])
        raise DataError(f"{path}: {len(bad)} of {total} rows are bad, refusing the file:"
                        f"\n  {shown}")
    for message in bad[:20]:
        log.warning("skipped bad row %s", message)


def _parse_interaction(row: dict[str, str]) -> InteractionRow:
    event = (row["event"] or "").strip()
    if not event:
        raise ValueError("event is empty")
    return InteractionRow(
        user_id=_check_id(row["user_id"], "user_id"),
        item_id=_check_id(row["item_id"], "item_id"),
        event=event,
        value=_optional_number(row.get("value") or "", "value"),
        timestamp=_optional_number(row.get("timestamp") or "", "timestamp"),
    )


def _parse_social(row: dict[str, str]) -> SocialRow:
    weight = _optional_number(row.get("weight") or "", "weight")
    if weight is not None and weight <= 0:
        raise ValueError(f"weight {weight} must be positive")
    return SocialRow(
        user_id=_check_id(row["user_id"], "user_id"),
        friend_id=_check_id(row["friend_id"], "friend_id"),
        weight=1.0 if weight is None else weight,
    )


def _parse_item(row: dict[str, str]) -> tuple[str, ItemMeta]:
    tags = tuple(t for t in (row.get("tags") or "").split(";") if t)
    return _check_id(row["item_id"], "item_id"), ItemMeta(
        title=row.get("title") or "", category=row.get("category") or "", tags=tags
    )


def iter_interactions(path: Path) -> Iterator[InteractionRow]:
    """The rows one at a time: a large file is aggregated without holding all its rows."""
    return _read_rows(path, INTERACTION_COLUMNS, _parse_interaction,
                      required=("user_id", "item_id", "event"))


def read_interactions(path: Path) -> list[InteractionRow]:
    return list(iter_interactions(path))


def read_social(path: Path) -> list[SocialRow]:
    return list(_read_rows(path, SOCIAL_COLUMNS, _parse_social, required=("user_id", "friend_id")))


def read_items(path: Path) -> dict[str, ItemMeta]:
    return dict(_read_rows(path, ITEM_COLUMNS, _parse_item, required=("item_id",)))


def interactions_file(folder: Path) -> Path:
    """`train.csv` when the folder holds a split (test.csv is never read here), else
    `interactions.csv`."""
    for name in ("train.csv", "interactions.csv"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: neither train.csv nor interactions.csv exists")


def build_histories(rows: Iterable[InteractionRow], users: IdMap, items: IdMap,
                    type_weights: Mapping[str, float]) -> list[list[tuple[int, float]]]:
    """Aggregate per (user, item): summed weight, ordered most recent first. Rows without a
    timestamp count as newer the later they appear in the file."""
    acc: dict[int, dict[int, tuple[float, tuple[float, int]]]] = {}
    for order, r in enumerate(rows):
        u, i = users.add(r.user_id), items.add(r.item_id)
        w = event_weight(r.event, r.value, type_weights)
        recency = (r.timestamp if r.timestamp is not None else -math.inf, order)
        per_item = acc.setdefault(u, {})
        total, newest = per_item.get(i, (0.0, recency))
        per_item[i] = (total + w, max(newest, recency))
    histories: list[list[tuple[int, float]]] = [[] for _ in range(len(users))]
    for u, per_item in acc.items():
        ordered = sorted(per_item.items(), key=lambda kv: kv[1][1], reverse=True)
        histories[u] = [(i, w) for i, (w, _) in ordered]
    return histories


def _friend_lists(social: list[SocialRow], users: IdMap) -> list[list[tuple[int, float]]]:
    friends: list[dict[int, float]] = [{} for _ in range(len(users))]
    for s in social:
        u, f = users.index[s.user_id], users.index[s.friend_id]
        if u != f:
            friends[u][f] = s.weight
    return [sorted(f.items(), key=lambda tie: tie_rank((users.ids[tie[0]], tie[1])))
            for f in friends]


def count_rows(path: Path) -> int:
    """Data rows of a CSV file without quoted newlines (a progress bar's total)."""
    with path.open("rb") as fh:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
                   - 1)


def load_dataset(folder: Path | str, type_weights: Mapping[str, float],
                 progress: bool = False) -> Dataset:
    """Load the training part of a dataset folder (interactions or train, social, items);
    `progress`: a bar with an ETA over the interaction rows."""
    folder = Path(folder)
    users, items = IdMap(), IdMap()
    meta: dict[int, ItemMeta] = {}
    if (folder / "items.csv").is_file():
        for item_id, m in read_items(folder / "items.csv").items():
            meta[items.add(item_id)] = m
    path = interactions_file(folder)
    rows: Iterable[InteractionRow] = iter_interactions(path)
    if progress:
        rows = tqdm(rows, total=count_rows(path), desc="load", unit="row", leave=False,
                    mininterval=0.5)
    social = read_social(folder / "social.csv") if (folder / "social.csv").is_file() else []
    for s in social:
        users.add(s.user_id)
        users.add(s.friend_id)
    histories = build_histories(rows, users, items, type_weights)
    histories.extend([] for _ in range(len(users) - len(histories)))
    return Dataset(users=users, items=items, histories=histories,
                   friends=_friend_lists(social, users), item_meta=meta)


def load_for_catalog(folder: Path | str, catalog: list[str],
                     type_weights: Mapping[str, float]) -> Dataset:
    """The training part of a dataset folder as a model with this item catalogue (its ids in
    index order) sees it: item indices are the model's, and interactions with items outside
    it are left out of the histories. The users are those of the whole folder in the same
    order whatever the catalogue, so two models of different catalogues are scored on the
    same users (`socialrec retrain` compares the served model with a new one)."""
    folder = Path(folder)
    rows = read_interactions(interactions_file(folder))
    social = read_social(folder / "social.csv") if (folder / "social.csv").is_file() else []
    users, items = IdMap(), IdMap(catalog)
    for s in social:
        users.add(s.user_id)
        users.add(s.friend_id)
    for r in rows:
        users.add(r.user_id)
    histories = build_histories([r for r in rows if r.item_id in items.index], users, items,
                                type_weights)
    return Dataset(users=users, items=items, histories=histories,
                   friends=_friend_lists(social, users))


def load_test(folder: Path | str, dataset: Dataset) -> dict[int, set[int]]:
    """Held-out items per known user from `test.csv` (evaluation only). A test item outside the
    catalogue gets a distinct negative index: it can never be hit but still counts in Recall's
    denominator, as in the published protocol."""
    test: dict[int, set[int]] = {}
    outside: dict[str, int] = {}
    for r in read_interactions(Path(folder) / "test.csv"):
        u = dataset.users.index.get(r.user_id)
        if u is None:
            continue
        i = dataset.items.index.get(r.item_id)
        if i is None:
            i = outside.setdefault(r.item_id, -1 - len(outside))
        test.setdefault(u, set()).add(i)
    return test
