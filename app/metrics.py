"""Prometheus metrics, one registry per app instance (tests build many apps in one process).

Routes are labelled by their template (`/recommend/{user_id}`), never by raw ids, so the
series count stays bounded whatever clients send."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
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
        self.fallbacks = Counter("socialrec_fallback_total", "degraded or filled answers",
                                 ["reason"], registry=r)
        self.model = Info("socialrec_model", "the model being served", registry=r)
        self.model_loaded = Gauge("socialrec_model_loaded_timestamp_seconds",
                                  "when the served model was loaded", registry=r)
        self.reloads = Counter("socialrec_model_reloads_total", "admin reloads by outcome",
                               ["outcome"], registry=r)

    def model_swapped(self, version: str, created_at: str) -> None:
        self.model.info({"version": version, "created_at": created_at})
        self.model_loaded.set_to_current_time()
