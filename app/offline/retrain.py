"""`socialrec retrain`: export the live log, merge it with the base data, train, and promote the
new model only if it ranks a time-ordered holdout no worse than the served one (docs/CLI.md,
docs/OPERATIONS.md "Retraining").

The artifacts root is the single source of what is served:

    ROOT/versions/<UTC time>-<model version>/   one artifact folder per promoted model
    ROOT/current -> versions/<...>              what every API process loads
                                                 (SOCIALREC_ARTIFACTS=ROOT/current)

Promotion writes the new version folder, moves `current` to it with one atomic rename and then
tells every API process to reload: through the reload notice in Redis that they all poll, or
through `POST /admin/reload` on one of them. Everything this job writes besides the version
folder (the export of the live log, the merged dataset) holds raw user events and lives in a
work folder removed when the job ends.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import fcntl
import json
import math
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from redis.exceptions import RedisError
from tqdm import tqdm

from app.config import Settings
from app.events import ID_RE, type_weights
from app.offline.dataset import (
    DataError,
    InteractionRow,
    ItemMeta,
    load_for_catalog,
    load_test,
    read_interactions,
    read_items,
    read_social,
)
from app.offline.evaluate import metrics_at, paired_bootstrap, per_user, rank_users
from app.offline.events_export import export_events
from app.offline.split import write_interactions
from app.serving.artifacts import ArtifactError, ModelArtifacts
from app.serving.holder import load_checked
from app.serving.pipeline import Recommender
from app.store.bulk import announce_reload, last_reload, sync_client
from app.store.keys import Keys

if TYPE_CHECKING:
    from app.offline.train import TrainConfig

CURRENT = "current"
VERSIONS = "versions"
LOCK_FILE = ".retrain.lock"
REPORT_FILE = "retrain.json"  # the report of the run that promoted a version, in its folder
METRICS = ("recall", "ndcg", "precision", "hitrate")
REPORT_KS = (10, 20)
STAGES = ("export", "merge", "holdout", "train", "evaluate new", "evaluate served", "publish")


class RetrainError(ValueError):
    """The job cannot run as asked (layout, options, another run); nothing was changed."""


@dataclass(frozen=True)
class Gate:
    """The new model is promoted when `metric` on the holdout is at least
    served × (1 − tolerance), and at least `min_quality` when given."""

    metric: str = "ndcg@20"
    tolerance: float = 0.02
    min_quality: float | None = None

    def __post_init__(self) -> None:
        name, _, k = self.metric.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) < 1:
            raise RetrainError(f"--metric {self.metric!r}: expected one of "
                               f"{', '.join(m + '@K' for m in METRICS)} with K ≥ 1")
        if not 0.0 <= self.tolerance < 1.0:  # also refuses NaN
            raise RetrainError(f"--tolerance must be at least 0 and below 1, got {self.tolerance}")
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            raise RetrainError(f"--min-quality must be between 0 and 1, got {self.min_quality}")

    @property
    def k(self) -> int:
        return int(self.metric.partition("@")[2])

    def threshold(self, served: float | None) -> float:
        """The score the new model must reach."""
        floor = self.min_quality or 0.0
        return floor if served is None else max(floor, served * (1.0 - self.tolerance))


@dataclass
class RetrainOptions:
    data_dir: Path
    artifacts_root: Path
    redis_url: str | None = None
    holdout: float = 0.1  # the most recent share of the behaviour events
    gate: Gate = field(default_factory=Gate)
    erased_users: Path | None = None
    reload_url: str | None = None  # POST URL/admin/reload instead of the notice in Redis
    keep: int = 3  # version folders kept, the served one included
    train: TrainConfig | None = None  # None: the tuned defaults
    progress: bool = True


@dataclass
class Merged:
    """The base data and the live export as one dataset, in time order."""

    rows: list[InteractionRow]
    social: dict[tuple[str, str], float]
    items: dict[str, ItemMeta]
    counts: dict[str, int]


def retrain(opts: RetrainOptions, settings: Settings | None = None) -> dict[str, Any]:
    """Run the whole job; returns the report (docs/CLI.md). `report["status"]` is "promoted"
    or, with the old model kept, "refused" (the gate) or "reload_failed". Raises RetrainError,
    DataError, ArtifactError, OSError or a Redis error when it cannot run; nothing served
    changes then."""
    settings = settings or Settings()
    root = Path(opts.artifacts_root)
    _check_options(opts)
    root.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started_at": _now(), "data": str(opts.data_dir),
                              "artifacts_root": str(root), "gate": dataclasses.asdict(opts.gate),
                              "holdout": {"fraction": opts.holdout}, "warnings": []}
    started = time.monotonic()
    with _locked(root), tempfile.TemporaryDirectory(prefix=".retrain-", dir=root) as work_name, \
            tqdm(total=len(STAGES), desc="retrain", unit="stage",
                 disable=not opts.progress) as bar:
        work = Path(work_name)

        def stage(name: str) -> None:
            bar.set_postfix_str(name)

        stage("served")
        served_dir = served_folder(root)
        client = sync_client(opts.redis_url, settings)
        try:
            keys = Keys(settings.key_prefix)
            notice = last_reload(client, keys)
            report["announced"] = {"generation": notice.generation, "version": notice.version,
                                   "origin": notice.origin}
            served = load_served(served_dir, notice.version, settings, report)
            stage("export")
            live_csv = work / "live" / "interactions.csv"
            export_events(live_csv, opts.redis_url, settings, progress=opts.progress)
            bar.update()
            stage("merge")
            merged = merge(opts.data_dir, live_csv.parent, opts.erased_users)
            report["data_counts"] = merged.counts
            bar.update()
            stage("holdout")
            split_dir = work / "split"
            report["holdout"] |= write_holdout(
                merged, opts.holdout, split_dir,
                None if served is None else report["served"]["trained_until"])
            bar.update()
            stage("train")
            # PyTorch only here: `ordinary_error` imports this module, and bad options or
            # data should fail before a slow import.
            from app.offline.train import TrainConfig, train

            staged = work / "model"
            manifest = train(split_dir, staged, opts.train or TrainConfig(),
                             progress=opts.progress)
            bar.update()
            stage("evaluate new")
            # the smoke test an API process runs before it serves a model
            new = load_checked(staged, settings.onnx_threads)
            ks = tuple(sorted({*REPORT_KS, opts.gate.k}))
            new_scores, new_users = score(new, split_dir, ks, opts.gate.metric, settings)
            report["new"] = {"model_version": manifest.model_version, "metrics": new_scores}
            bar.update()
            stage("evaluate served")
            served_scores = None
            if served is not None:
                served_scores = score(served, split_dir, ks, opts.gate.metric, settings)
                report["served"]["metrics"] = served_scores[0]
            bar.update()
            report["decision"] = decide(opts.gate, new_scores, new_users, served_scores)
            stage("publish")
            if report["decision"]["promote"]:
                report |= publish(root, staged, manifest.model_version, served_dir, opts,
                                  client, keys, settings, report)
            else:
                report["status"] = "refused"
            bar.update()
        finally:
            client.close()
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _check_options(opts: RetrainOptions) -> None:
    if not 0.0 < opts.holdout < 1.0:
        raise RetrainError(f"--holdout must be above 0 and below 1, got {opts.holdout}")
    if opts.keep < 1:
        raise RetrainError(f"--keep must be at least 1, got {opts.keep}")
    if not Path(opts.data_dir).is_dir():
        raise RetrainError(f"--data {opts.data_dir}: not a folder")
    if opts.erased_users is not None and not Path(opts.erased_users).is_file():
        raise RetrainError(f"--erased-users {opts.erased_users}: not a file")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One job per artifacts root: a second one fails at once instead of racing the first
    for the `current` pointer."""
    with (root / LOCK_FILE).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainError(f"another retrain is running on {root} (it holds "
                               f"{root / LOCK_FILE})") from None
        yield


def served_folder(root: Path) -> Path | None:
    """The version folder `ROOT/current` points to; None before the first promotion."""
    pointer = root / CURRENT
    if not pointer.is_symlink():
        if pointer.exists():
            raise RetrainError(f"{pointer} is a folder, not a link: move it to "
                               f"{root / VERSIONS}/NAME and make {pointer} a link to "
                               f"{VERSIONS}/NAME (docs/OPERATIONS.md)")
        return None
    return pointer.resolve()


# ---------------------------------------------------------------- data


def merge(base_dir: Path, live_dir: Path, erased_file: Path | None) -> Merged:
    """Base dataset + live export. Rows of users listed in `erased_file` are dropped from the
    base data only: the live log no longer holds anything of theirs from before the erasure,
    and what it holds from after it is new data. A live row equal to a base row (user, item,
    event, value and timestamp, which must be set) is dropped: base data assembled from an
    earlier export must not count its events twice. Follows and unfollows of the log are
    replayed over the base friendships in log order."""
    erased = read_erased(erased_file) if erased_file is not None else set()
    base_rows = _base_interactions(Path(base_dir))
    kept = [r for r in base_rows if r.user_id not in erased]
    seen = {_row_key(r) for r in kept if r.timestamp is not None}
    live_rows = read_interactions(live_dir / "interactions.csv")
    fresh = [r for r in live_rows if r.timestamp is None or _row_key(r) not in seen]
    social: dict[tuple[str, str], float] = {}
    erased_edges = 0
    if (Path(base_dir) / "social.csv").is_file():
        for s in read_social(Path(base_dir) / "social.csv"):
            if s.user_id in erased or s.friend_id in erased:
                erased_edges += 1
            else:
                social[(s.user_id, s.friend_id)] = s.weight
    follows = _replay_social(live_dir / "social_events.csv", social)
    items: dict[str, ItemMeta] = {}
    for folder in (Path(base_dir), live_dir):
        if (folder / "items.csv").is_file():
            items |= read_items(folder / "items.csv")  # the live catalogue wins
    rows = kept + fresh
    return Merged(rows=rows, social=social, items=items, counts={
        "base_rows": len(base_rows), "erased_base_rows": len(base_rows) - len(kept),
        "erased_base_edges": erased_edges, "erased_users_listed": len(erased),
        "live_rows": len(live_rows), "live_duplicates": len(live_rows) - len(fresh),
        "live_social_events": follows, "rows": len(rows), "users": len({r.user_id for r in rows}),
        "items": len({r.item_id for r in rows} | set(items)), "friend_edges": len(social)})


def read_erased(path: Path) -> set[str]:
    """User ids, one per line; blank lines and lines starting with # are skipped."""
    ids = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not ID_RE.fullmatch(text):
            raise DataError(f"{path}:{number}: {text!r} is not a valid user id")
        ids.add(text)
    return ids


def _base_interactions(folder: Path) -> list[InteractionRow]:
    """interactions.csv, or a split's train.csv and test.csv together."""
    if (folder / "interactions.csv").is_file():
        return read_interactions(folder / "interactions.csv")
    parts = [folder / "train.csv", folder / "test.csv"]
    if not all(p.is_file() for p in parts):
        raise DataError(f"{folder}: no interactions.csv (nor train.csv and test.csv) to "
                        f"retrain from")
    return [r for p in parts for r in read_interactions(p)]


def _row_key(r: InteractionRow) -> tuple[str, str, str, float | None, float | None]:
    return (r.user_id, r.item_id, r.event, r.value, r.timestamp)


def _replay_social(path: Path, social: dict[tuple[str, str], float]) -> int:
    """Apply the exported follows and unfollows in log order; returns how many there were."""
    if not path.is_file():
        return 0
    count = 0
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            pair = (row["user_id"], row["friend_id"])
            if row["event"] == "unfollow":
                social.pop(pair, None)
            else:
                social[pair] = float(row["weight"] or 1.0)
            count += 1
    return count


def time_order(rows: list[InteractionRow]) -> tuple[list[int], list[float]]:
    """Row positions from oldest to newest, and each row's time. A row without a timestamp is
    taken to be as recent as the newest row before it (files and the log are written in time
    order), so data without any timestamps keeps its file order."""
    latest = -math.inf
    when = []
    for r in rows:
        if r.timestamp is not None:
            latest = max(latest, r.timestamp)
        when.append(r.timestamp if r.timestamp is not None else latest)
    return sorted(range(len(rows)), key=when.__getitem__), when  # stable: ties keep file order


def write_holdout(merged: Merged, fraction: float, out_dir: Path,
                  served_until: float | None = None) -> dict[str, Any]:
    """A time-ordered split into `out_dir` (train.csv, test.csv, social.csv, items.csv): the
    most recent `fraction` of the behaviour rows is the holdout, but only rows newer than
    `served_until` (what the served model may have been trained on: scoring it on its own
    training data would flatter it). Of the holdout, rows on items the user already had before
    the cut are dropped (the service never recommends a seen item, so they cannot be hits):
    what a user did first after the cut is what both models must find."""
    rows = merged.rows
    order, when = time_order(rows)
    times = [when[i] for i in order]
    n_train = len(rows) - math.ceil(fraction * len(rows))
    if served_until is not None:
        n_train = max(n_train, bisect.bisect_right(times, served_until))
    if n_train >= len(rows):
        raise DataError(f"no event is newer than the served model's training data (until "
                        f"{_iso(served_until)}): nothing to compare the models on yet")
    if n_train < 1:
        raise DataError(f"{len(rows)} interactions are too few to hold out {fraction:.0%} "
                        f"and train on the rest")
    train_rows = [rows[i] for i in order[:n_train]]
    before = {(r.user_id, r.item_id) for r in train_rows}
    held = [rows[i] for i in order[n_train:]]
    test_rows = [r for r in held if (r.user_id, r.item_id) not in before]
    known_users = {r.user_id for r in train_rows} | {u for pair in merged.social for u in pair}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_interactions(out_dir / "train.csv", train_rows)
    write_interactions(out_dir / "test.csv", test_rows)
    with (out_dir / "social.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("user_id", "friend_id", "weight"))
        writer.writerows((u, f, repr(w)) for (u, f), w in merged.social.items())
    with (out_dir / "items.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("item_id", "title", "category", "tags"))
        writer.writerows((i, m.title, m.category, ";".join(m.tags))
                         for i, m in merged.items.items())
    test_users = {r.user_id for r in test_rows}
    return {"train_rows": len(train_rows), "holdout_rows": len(held),
            "share": round(len(held) / len(rows), 4),
            "repeat_rows_dropped": len(held) - len(test_rows), "test_rows": len(test_rows),
            "test_users": len(test_users & known_users),
            "new_users_unscored": len(test_users - known_users),
            "train_until": _finite(times[n_train - 1]), "holdout_from": _finite(times[n_train])}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _iso(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "the start"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- evaluation


def score(recommender: Recommender, split_dir: Path, ks: tuple[int, ...], metric: str,
          settings: Settings) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of the full pipeline on the holdout at each K, and the gate metric per test
    user (users in the order of the folder, the same for any model)."""
    weights = type_weights(settings.event_weights, recommender.manifest.event_weights)
    data = load_for_catalog(split_dir, recommender.artifacts.catalog.ids, weights)
    test = {u: items for u, items in sorted(load_test(split_dir, data).items()) if items}
    if not test:
        raise DataError("no user of the holdout is known from the training data: nothing to "
                        "score (more data, or a larger --holdout)")
    rankings = rank_users(recommender, data, test, max(ks))
    metrics = metrics_at(rankings, ks, data.n_items) | {"users": float(len(test))}
    return metrics, per_user(rankings, int(metric.partition("@")[2]))[metric]


def load_served(folder: Path | None, announced: str, settings: Settings,
                report: dict[str, Any]) -> Recommender | None:
    """The served model, and in `report["served"]` what it is and until when its training
    data may reach (`trained_until`, unix seconds): the cut recorded by the retrain that
    promoted it, else its creation time."""
    if folder is None:
        report["served"] = None
        return None
    try:
        artifacts = ModelArtifacts.load(folder, settings.onnx_threads)
    except ArtifactError as exc:
        # No API process could start from it either: the new model is judged on its own.
        report["warnings"].append(f"the served folder cannot be loaded ({exc}); the new model "
                                  f"is compared with nothing")
        report["served"] = None
        return None
    served = Recommender(artifacts)
    if announced and announced != served.version:
        report["warnings"].append(
            f"{CURRENT} holds model {served.version} but the last reload announced "
            f"{announced}: processes that did not follow may serve {announced}")
    until, source = _trained_until(folder, served.manifest.created_at)
    report["served"] = {"model_version": served.version, "folder": str(folder),
                        "created_at": served.manifest.created_at, "trained_until": until,
                        "trained_until_from": source}
    return served


def _trained_until(folder: Path, created_at: str) -> tuple[float, str]:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        recorded = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        until = recorded["holdout"]["train_until"]
        if until is not None:
            return float(until), REPORT_FILE
    return datetime.fromisoformat(created_at).timestamp(), "created_at"


def decide(gate: Gate, new: dict[str, float], new_users: np.ndarray,
           served: tuple[dict[str, float], np.ndarray] | None) -> dict[str, Any]:
    served_value = None if served is None else served[0][gate.metric]
    threshold = gate.threshold(served_value)
    value = new[gate.metric]
    out: dict[str, Any] = {"metric": gate.metric, "new": value, "served": served_value,
                           "threshold": threshold, "promote": value >= threshold}
    if served is not None:  # how sure the difference is, for whoever reads the report
        out["difference"] = paired_bootstrap(new_users, served[1])
    return out


# ---------------------------------------------------------------- publishing


def publish(root: Path, staged: Path, version: str, served_dir: Path | None,
            opts: RetrainOptions, client: Any, keys: Keys, settings: Settings,
            report: dict[str, Any]) -> dict[str, Any]:
    """Move the staged model into ROOT/versions, point `current` at it and ask every API
    process to reload. If the reload is refused or cannot be asked for, `current` goes back to
    the served folder and the status says so."""
    name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{version}"
    folder = root / VERSIONS / name
    folder.parent.mkdir(exist_ok=True)
    staged.rename(folder)
    out: dict[str, Any] = {"folder": str(folder)}
    point_current(root, folder)
    try:
        if opts.reload_url:
            out["reload"] = _post_reload(opts.reload_url, settings.admin_token, version)
        else:
            origin = f"retrain@{socket.gethostname()}:{os.getpid()}"
            out["reload"] = {"via": "redis", "generation": announce_reload(
                client, keys, version, origin)}
    except (ReloadFailed, OSError, RedisError) as exc:
        if served_dir is not None:
            point_current(root, served_dir)
        else:
            (root / CURRENT).unlink()
        out |= {"reload": {"error": str(exc) or type(exc).__name__}, "status": "reload_failed"}
    else:
        out |= {"status": "promoted",
                "removed_versions": prune(root, opts.keep, keep_also=(folder,))}
    # beside the model: which data, holdout and figures let it in
    (folder / REPORT_FILE).write_text(json.dumps(report | out, indent=2) + "\n",
                                      encoding="utf-8")
    return out


def point_current(root: Path, folder: Path) -> None:
    """Atomically make ROOT/current a link to `folder` (relative, so the root can be mounted
    at another path in the API containers)."""
    tmp = root / f".{CURRENT}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(os.path.relpath(folder, root)))
    os.replace(tmp, root / CURRENT)


class ReloadFailed(RuntimeError):
    """The service did not confirm the reload."""


def _post_reload(url: str, token: str | None, version: str) -> dict[str, Any]:
    if not token:
        raise ReloadFailed("--reload-url needs SOCIALREC_ADMIN_TOKEN")
    request = urllib.request.Request(url.rstrip("/") + "/admin/reload", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ReloadFailed(f"POST {request.full_url}: {exc.code} "
                           f"{exc.read().decode(errors='replace')[:500]}") from None
    if answer.get("model_version") != version:
        raise ReloadFailed(f"the service reloaded {answer.get('model_version')}, not {version}: "
                           f"is its SOCIALREC_ARTIFACTS the {CURRENT} link of this root?")
    return {"via": "http", "url": request.full_url, **answer}


def prune(root: Path, keep: int, keep_also: tuple[Path, ...] = ()) -> list[str]:
    """Remove all but the `keep` newest version folders (names sort by time), never one in
    `keep_also`; returns the names removed."""
    folders = sorted((p for p in (root / VERSIONS).iterdir() if p.is_dir()), reverse=True)
    removed = []
    for folder in folders[keep:]:
        if folder in keep_also:
            continue
        shutil.rmtree(folder)
        removed.append(folder.name)
    return removed


def summary(report: dict[str, Any]) -> str:
    """The one line the command prints."""
    d = report["decision"]
    new = f"{report['new']['model_version']} {d['metric']} {d['new']:.4f}"
    if d["served"] is None:
        against = "no served model"
    else:
        against = (f"served {report['served']['model_version']} {d['served']:.4f}, "
                   f"tolerance {report['gate']['tolerance']:.0%}")
    gate = f"({against}; needed {d['threshold']:.4f})"
    if report["status"] == "promoted":
        return f"promoted {new} {gate} -> {report['folder']}"
    served = report["served"]["model_version"] if report.get("served") else "nothing"
    if report["status"] == "refused":
        return f"refused {new} {gate}; still serving {served}"
    return (f"reload failed, kept {served}: {report['reload']['error']} (new model {new} "
            f"{gate} stays in {report['folder']})")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
