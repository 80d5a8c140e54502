"""Prometheus metrics, one registry per app instance (tests build many apps in one process).

Routes are labelled by their template (`/recommend/{user_id}`), never by raw ids, so the
series count stays bounded whatever clients send.

With several worker processes (`socialrec serve --workers N`) the workers share their values
through files in `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode, which the
library selects when that variable is set at import; `socialrec serve` manages the folder), so
a scrape answered by any worker reports all of them: counters and histograms summed over every
worker that ever ran, gauges per live worker (a `pid` label)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

M = TypeVar("M", bound=MetricWrapperBase)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        shared = os.environ.get(MULTIPROC_DIR)
        self.shared_dir = Path(shared) if shared else None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("socialrec_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("socialrec_http_request_duration_seconds",
                                 "HTTP request latency", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.events = Counter("socialrec_events_ingested_total", "events applied, by type",
                              ["type"], registry=r)
        self.duplicates = Counter("socialrec_events_duplicate_total",
                                  "events skipped because their event_id was seen", registry=r)
        self.strategies = Counter("socialrec_recommend_strategy_total",
                                  "recommendation lists by strategy", ["strategy"], registry=r)
        self.list_cache = Counter("socialrec_list_cache_total",
                                  "GET /recommend answers by the ranked-list cache: hit (also "
                                  "from a list this process was computing), miss (computed and "
                                  "stored) or off (not asked: TTL 0, social=false "
                                  "or exclude_seen=false)", ["result"], registry=r)
        self.recommend_waiting = Gauge(
            "socialrec_recommend_waiting", "GET /recommend requests waiting for a turn "
            "(SOCIALREC_RECOMMEND_CONCURRENCY are worked on at once)", registry=r,
            multiprocess_mode="livesum")
        self.fallbacks = Counter("socialrec_fallback_total", "degraded or filled answers",
                                 ["reason"], registry=r)
        # A gauge, not an Info: Info has no multiprocess mode. 1 for the version served, 0 for
        # the ones this process served before.
        self.model = Gauge("socialrec_model_info", "the model being served (value 1)",
                           ["version", "created_at"], registry=r, multiprocess_mode="liveall")
        self.model_loaded = Gauge("socialrec_model_loaded_timestamp_seconds",
                                  "when the served model was loaded", registry=r,
                                  multiprocess_mode="liveall")
        self.model_stale = Gauge("socialrec_model_stale",
                                 "1 while this process could not load the last reload another "
                                 "process announced and serves an older model", registry=r,
                                 multiprocess_mode="liveall")
        self.reloads = Counter("socialrec_model_reloads_total",
                               "model reloads by outcome: ok, refused or unannounced "
                               "(/admin/reload), followed or follow_failed (announced by "
                               "another process)", ["outcome"], registry=r)
        self.catalog_generation = Gauge(
            "socialrec_catalog_generation", "the last live-catalogue change this process "
            "applied (every process should show the same within a second)", registry=r,
            multiprocess_mode="liveall")
        self._served: tuple[str, str] | None = None
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}

    def child(self, metric: M, *values: str) -> M:
        """`metric.labels(*values)`, looked up once: prometheus-client checks the values and
        takes a lock on every call (a few µs, four times per request on the hot route). Every
        label here takes a bounded set of values (route templates, statuses, strategies)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return cast(M, found)

    def model_swapped(self, version: str, created_at: str) -> None:
        if self._served is not None:
            self.model.labels(*self._served).set(0)
        self._served = (version, created_at)
        self.model.labels(version, created_at).set(1)
        self.model_loaded.set_to_current_time()

    def exposition(self) -> bytes:
        """The text format of this process's metrics, or of every worker's."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        _forget_dead_workers(self.shared_dir)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.shared_dir))
        return generate_latest(registry)

    def close(self) -> None:
        """At shutdown: this process's gauges leave the scrape (its counters stay summed)."""
        if self.shared_dir is not None:
            mark_process_dead(os.getpid(), str(self.shared_dir))


def _forget_dead_workers(folder: Path) -> None:
    """Drop the gauges of workers that died without shutting down (killed, crashed): their
    live gauges would otherwise be reported for ever."""
    pids = {int(f.stem.rpartition("_")[2]) for f in folder.glob("gauge_live*_*.db")}
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(folder))
        except PermissionError:  # alive, under another user
            pass
