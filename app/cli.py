"""`socialrec` command line (docs/CLI.md). Heavy modules are imported inside each command so that
`socialrec serve` never imports PyTorch and `--help` stays instant."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# faiss announces at INFO which build it loaded: noise in front of a command's output.
QUIET_LOGGERS = ("faiss.loader",)


def _synth(args: argparse.Namespace) -> int:
    from app.offline.synth import write_synthetic_dataset

    summary = write_synthetic_dataset(Path(args.out_dir), n_users=args.users,
                                      n_items=args.items, seed=args.seed,
                                      activity=args.activity)
    print(f"wrote {args.out_dir}: {summary}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from app.offline.stages import StageClock
    from app.offline.train import TrainConfig, train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    clock = StageClock()
    manifest = train(Path(args.data_dir), Path(args.out), TrainConfig(**overrides), clock=clock)
    print(f"model {manifest.model_version} written to {args.out}")
    print(json.dumps(manifest.metrics, indent=2))
    # the export's own figures cannot be in the manifest it writes
    print("stages (wall seconds, peak resident MB): " + ", ".join(
        f"{stage} {seconds:.1f} s {clock.peak_mb[stage]:.0f} MB"
        for stage, seconds in clock.seconds.items()))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from app.config import Settings
    from app.events import type_weights
    from app.offline.dataset import DataError, load_dataset, load_test
    from app.offline.evaluate import evaluate, format_report
    from app.offline.split import read_cold_items
    from app.serving.artifacts import ModelArtifacts
    from app.serving.pipeline import Recommender

    ks = tuple(int(k) for k in args.k.split(","))
    reporter = _reporter(Path(args.report)) if args.report else None
    recommender = Recommender(ModelArtifacts.load(args.artifact_dir))
    # weighed as `socialrec load` and the service weigh the histories they rank from
    weights = type_weights(Settings().event_weights, recommender.manifest.event_weights)
    data = load_dataset(args.data_dir, weights)
    _check_same_catalog(recommender, data)
    cold = None
    if (cold_ids := read_cold_items(Path(args.data_dir))) is not None:
        unknown = [i for i in cold_ids if i not in data.items.index]
        if unknown:
            raise DataError(f"{args.data_dir}/cold_items.txt: {len(unknown)} ids are not in the "
                            f"catalogue (first: {unknown[0]!r}); items.csv must list them")
        cold = np.asarray([data.items.index[i] for i in cold_ids], dtype=np.int64)
    curve_ks = reporter.CURVE_KS if reporter else ()
    report = evaluate(recommender, data, load_test(args.data_dir, data), ks, curve_ks=curve_ks,
                      cold_items=cold)
    print(format_report(report, ks))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if reporter:
        about = {"model": recommender.version, "artifacts": str(args.artifact_dir),
                 "data": str(args.data_dir)}
        print(f"report: {reporter.write_report(report, Path(args.report), ks, about)}")
    return 0


def _reporter(out_dir: Path) -> ModuleType:
    """The report module, checked before the (long) evaluation starts."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--report {out_dir} is a file, not a folder")
    try:
        from app.offline import report
    except ImportError as exc:
        print(f"error: --report needs matplotlib ({exc}): pip install 'socialrec[train]'",
              file=sys.stderr)
        raise SystemExit(2) from None
    return report


def _check_same_catalog(recommender: Any, data: Any) -> None:
    if recommender.artifacts.catalog.ids != data.items.ids:
        raise SystemExit("error: the artifacts were trained on a different item catalogue than "
                         "DATA_DIR; evaluate on the dataset the model was trained on")


def _split(args: argparse.Namespace) -> int:
    from app.offline.split import split_dataset

    summary = split_dataset(Path(args.data_dir), Path(args.out_dir), args.test_fraction,
                            args.seed, args.cold_items)
    print(f"wrote {args.out_dir}: {summary}")
    return 0


def _load(args: argparse.Namespace) -> int:
    from app.offline.load import load_into_redis

    load_into_redis(Path(args.artifact_dir), Path(args.data_dir), args.redis_url)
    return 0


def _events_export(args: argparse.Namespace) -> int:
    from app.offline.events_export import export_events

    export_events(Path(args.out_csv), args.redis_url)
    return 0


def _delete_user(args: argparse.Namespace) -> int:
    from app.offline.erase import delete_user

    erased = delete_user(args.user_id, args.redis_url)
    print(json.dumps({"user_id": args.user_id, "removed": dataclasses.asdict(erased)}))
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from app.offline.retrain import Gate, RetrainOptions, retrain, summary
    from app.offline.train import TrainConfig

    report_path = Path(args.report) if args.report else None
    if report_path is not None and not report_path.parent.is_dir():
        raise NotADirectoryError(f"--report {report_path}: {report_path.parent} is not a folder")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    gate = Gate(metric=args.metric, tolerance=args.tolerance, min_quality=args.min_quality)
    report = retrain(RetrainOptions(
        data_dir=Path(args.data), artifacts_root=Path(args.artifacts_root),
        redis_url=args.redis_url, holdout=args.holdout, gate=gate,
        erased_users=Path(args.erased_users) if args.erased_users else None,
        reload_url=args.reload_url, keep=args.keep, train=TrainConfig(**overrides),
        progress=sys.stderr.isatty() if args.progress is None else args.progress))
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    line = summary(report)
    if report["status"] == "promoted":
        print(line)
        return 0
    # the old model serves on: a scheduler must see the run as failed
    print(f"error: {line}", file=sys.stderr)
    return 1


def _serve(args: argparse.Namespace) -> int:
    # Before faiss is imported anywhere, and inherited by every worker: single FAISS queries
    # are many times slower with several OpenMP threads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from app.config import Settings
    from app.serving.artifacts import read_manifest

    # Bad settings or a wrong artifact path fail here in one line, not as a traceback in every
    # worker that uvicorn starts.
    read_manifest(Settings().artifacts)

    with _shared_metrics_dir(args.workers):
        config = uvicorn.Config("app.main:create_app", factory=True, host=args.host,
                                port=args.port, workers=args.workers, log_level="info",
                                access_log=False, log_config=_serve_logging())
        if config.workers == 1:
            server = uvicorn.Server(config)
            server.run()
            return 0 if server.started else STARTUP_FAILURE
        # uvicorn.run would exit 0 when the workers fail to start (broken artifacts): a
        # supervisor that restarts on failure must see it.
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        return STARTUP_FAILURE if failed else 0


def _serve_logging() -> dict[str, Any]:
    """uvicorn's logging plus the service's own loggers, as `main` sets them up: applied in
    every worker process, which does not inherit this process's logging set-up."""
    from uvicorn.config import LOGGING_CONFIG

    return {**LOGGING_CONFIG,
            "formatters": {**LOGGING_CONFIG["formatters"], "app": {"format": LOG_FORMAT}},
            "handlers": {**LOGGING_CONFIG["handlers"],
                         "app": {"class": "logging.StreamHandler", "formatter": "app",
                                 "stream": "ext://sys.stderr"}},
            "loggers": {**LOGGING_CONFIG["loggers"],
                        **{name: {"level": "WARNING"} for name in QUIET_LOGGERS}},
            "root": {"handlers": ["app"], "level": "INFO"}}


@contextlib.contextmanager
def _shared_metrics_dir(workers: int) -> Iterator[None]:
    """Workers report their metrics through files in PROMETHEUS_MULTIPROC_DIR, so that any
    worker's `/metrics` covers all of them. Set before any worker imports prometheus-client;
    the folder must start empty (stale files would add an earlier run's counts): an operator's
    folder is emptied of metric files, else a fresh one is made and removed at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield
    elif workers > 1:
        with tempfile.TemporaryDirectory(prefix="socialrec-metrics-") as folder_name:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder_name
            try:
                yield
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    else:
        yield


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per TrainConfig field; defaults stay in TrainConfig (the tuned ones)."""
    from app.offline.train import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        kind = type(f.default)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=f"default {f.default}")
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None,
                                help=f"default {f.default}")


def _redis_url(value: str) -> str:
    from app.config import check_redis_url

    try:
        return check_redis_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _retrain_flags(parser: argparse.ArgumentParser, with_train_flags: bool) -> None:
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="the base dataset (docs/DATA.md) the live log is merged into")
    parser.add_argument("--artifacts-root", required=True, metavar="DIR",
                        help="holds versions/ and the `current` link the service loads")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="most recent share of the events held out to compare the models "
                             "(default 0.1)")
    parser.add_argument("--metric", default="ndcg@20",
                        help="what the models are compared on (default ndcg@20)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="the new model may score this share below the served one "
                             "(default 0.02)")
    parser.add_argument("--min-quality", type=float, default=None,
                        help="and must score at least this (default: no floor)")
    parser.add_argument("--erased-users", metavar="FILE",
                        help="user ids (one a line) whose rows are dropped from the base data")
    parser.add_argument("--reload-url", metavar="URL",
                        help="ask an API process (URL/admin/reload, SOCIALREC_ADMIN_TOKEN) "
                             "instead of announcing the reload in Redis")
    parser.add_argument("--keep", type=int, default=3,
                        help="version folders kept, the served one included (default 3)")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: when stderr is a terminal)")
    if with_train_flags:
        _add_train_flags(parser)


def build_parser(with_train_flags: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="socialrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int]]] = [
        ("synth", "write a synthetic e-commerce dataset", _synth),
        ("train", "train on a dataset folder and export artifacts", _train),
        ("split", "write a reproducible train/test split of a dataset", _split),
        ("evaluate", "evaluate artifacts on a train/test split", _evaluate),
        ("load", "bootstrap Redis with a dataset's histories and friendships", _load),
        ("events-export", "write the durable event log as dataset CSVs", _events_export),
        ("delete-user", "erase everything held about one user (like DELETE /users/ID)",
         _delete_user),
        ("retrain", "export, merge, train, and promote the new model only if it is not worse "
                    "than the served one", _retrain),
        ("serve", "run the HTTP service", _serve),
    ]
    p = {name: sub.add_parser(name, help=text) for name, text, _ in commands}
    for name, _, func in commands:
        p[name].set_defaults(func=func)
    p["synth"].add_argument("out_dir")
    p["synth"].add_argument("--users", type=int, default=600)
    p["synth"].add_argument("--items", type=int, default=1200)
    p["synth"].add_argument("--seed", type=int, default=0)
    p["synth"].add_argument("--activity", type=float, default=18.0,
                            help="median own-taste engagements per user (events scale with it)")
    p["train"].add_argument("data_dir")
    p["train"].add_argument("--out", required=True, help="artifact folder to write")
    if with_train_flags:
        _add_train_flags(p["train"])
    p["split"].add_argument("data_dir")
    p["split"].add_argument("out_dir")
    p["split"].add_argument("--test-fraction", type=float, default=0.2,
                            help="share of each user's items held out (default 0.2)")
    p["split"].add_argument("--seed", type=int, default=0)
    p["split"].add_argument("--cold-items", type=float, default=0.0,
                            help="share of the items held out with all their interactions, "
                                 "listed in cold_items.txt (default 0: none)")
    p["evaluate"].add_argument("artifact_dir")
    p["evaluate"].add_argument("data_dir")
    p["evaluate"].add_argument("--k", default="10,20", help="comma-separated cut-offs")
    p["evaluate"].add_argument("--json", help="also write the report as JSON here")
    p["evaluate"].add_argument("--report", metavar="DIR",
                               help="also write DIR/report.html: the report with plots, "
                                    "self-contained (needs matplotlib)")
    _retrain_flags(p["retrain"], with_train_flags)
    for name in ("load", "events-export", "delete-user", "retrain"):
        p[name].add_argument("--redis-url", default=None, type=_redis_url,
                             help="default: SOCIALREC_REDIS_URL or redis://127.0.0.1:6379/0")
    p["load"].add_argument("artifact_dir")
    p["load"].add_argument("data_dir")
    p["events-export"].add_argument("out_csv")
    p["delete-user"].add_argument("user_id")
    p["serve"].add_argument("--host", default="127.0.0.1")
    p["serve"].add_argument("--port", type=int, default=8000)
    p["serve"].add_argument("--workers", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    from app.offline.stages import passive_openmp

    passive_openmp()  # before the training flags import PyTorch
    # Training flags need the training extra; every other command works without PyTorch.
    args = build_parser(with_train_flags=bool(argv) and argv[0] in ("train", "retrain")
                        ).parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for operators instead of a traceback
        message = ordinary_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return code


def ordinary_error(exc: Exception) -> str | None:
    """One line for an error an operator can fix (bad data, settings or artifacts, an
    unreachable Redis, a missing or unwritable file); None for a bug, which keeps its
    traceback."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError
    from redis.exceptions import RedisError

    from app.offline.dataset import DataError
    from app.offline.erase import UserIdError
    from app.offline.retrain import RetrainError
    from app.serving.artifacts import ArtifactError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return "; ".join(_setting_problem(e["loc"], e["msg"]) for e in exc.errors())
    if isinstance(exc, SettingsError):
        return f"invalid settings: {exc}"
    if isinstance(exc, RedisError):  # not a subclass of the builtin ConnectionError
        return f"Redis: {exc}"
    if isinstance(exc, DataError | ArtifactError | OSError | UserIdError | RetrainError):
        return str(exc)
    return None


def _setting_problem(loc: tuple[int | str, ...], msg: str) -> str:
    variable = "SOCIALREC_" + str(loc[0]).upper() if loc else "settings"
    msg = msg.removeprefix("Value error, ")
    return msg if msg.startswith(variable) else f"{variable}: {msg}"


if __name__ == "__main__":
    sys.exit(main())
