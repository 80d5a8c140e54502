"""The monitoring bundle (`docker compose --profile monitoring up`): the Grafana dashboard asks
only for series the service really exports, with labels they really carry, and the compose
profile wires Prometheus and Grafana to the files and services that exist. No Docker engine
here: the files are parsed and cross-checked."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.tools.local_redis import free_port
from tests.support.auth import ADMIN_TOKEN
from tests.support.client import app_client

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "docker/monitoring"
DASHBOARD = BUNDLE / "grafana/dashboards/socialrec.json"
PROMETHEUS_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
PROMETHEUS_SERIES = {"up": {"job", "instance"}}  # Prometheus' own series about each target


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def series_labels(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@pytest.fixture
async def exported(loaded: Settings) -> dict[str, set[str]]:
    """Every series name /metrics exports, with its label names, after traffic that touches
    each metric: recommendations, events and a duplicate, a reload, and a degraded answer."""
    async with app_client(loaded) as client:
        assert (await client.get("/recommend/u0001", params={"k": 5})).status_code == 200
        batch = {"events": [{"event_id": "mon-1", "user_id": "u1", "type": "view",
                             "item_id": "p00001"}]}
        for _ in range(2):
            assert (await client.post("/events", json=batch)).status_code == 202
        reload = await client.post("/admin/reload",
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert reload.status_code == 200
        series = series_labels((await client.get("/metrics")).text)
    down = loaded.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with app_client(down) as client:
        body = (await client.get("/recommend/u0001", params={"k": 5})).json()
        assert body["degraded"] is True
        for name, labels in series_labels((await client.get("/metrics")).text).items():
            series.setdefault(name, set()).update(labels)
    return series


def test_dashboard_is_valid_grafana_json_on_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    datasource = load_yaml(BUNDLE / "grafana/provisioning/datasources/prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


async def test_every_panel_queries_series_the_service_exports(
        exported: dict[str, set[str]]) -> None:
    known = exported | PROMETHEUS_SERIES
    queried: set[str] = set()
    for expr in expressions():
        names = set(re.findall(r"\b(socialrec_\w+|up)\b(?=\s*[{\[)])", expr))
        assert names, f"no series in {expr!r}"
        queried |= names
        labels = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr))
        used = {name.strip() for group in labels for name in group.split(",") if name.strip()}
        used |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        for name in names:
            assert name in known, f"{name} (in {expr!r}) is not in /metrics"
            missing = used - known[name] - PROMETHEUS_LABELS
            assert not missing, f"{name} has no label {missing} (in {expr!r})"
    # The list: request rate/latency per route, strategies, fallbacks, events by type,
    # duplicates, model version.
    for wanted in ("socialrec_http_requests_total",
                   "socialrec_http_request_duration_seconds_bucket",
                   "socialrec_recommend_strategy_total", "socialrec_fallback_total",
                   "socialrec_events_ingested_total", "socialrec_events_duplicate_total",
                   "socialrec_model_info"):
        assert wanted in queried, wanted


def test_compose_profile_wires_prometheus_and_grafana_to_the_bundle() -> None:
    compose = load_yaml(ROOT / "docker-compose.yml")
    services = compose["services"]
    # `docker compose up` alone is unchanged: the service and Redis have no profile.
    assert "profiles" not in services["api"] and "profiles" not in services["redis"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    mounts: dict[str, dict[PurePosixPath, Path]] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                mounts.setdefault(name, {})[PurePosixPath(target)] = ROOT / source
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"

    def on_host(service: str, path: str) -> Path:
        """The repository file a container path of `service` comes from."""
        target = PurePosixPath(path)
        for mount, source in mounts[service].items():
            if target == mount or mount in target.parents:
                return source / target.relative_to(mount)
        raise AssertionError(f"{path} is not mounted into {service}")

    prometheus = services["prometheus"]
    config = next(a.split("=", 1)[1] for a in prometheus["command"]
                  if a.startswith("--config.file="))
    scrape = load_yaml(on_host("prometheus", config))["scrape_configs"]
    targets = [t for job in scrape for c in job["static_configs"] for t in c["targets"]]
    assert targets == ["api:8000"]
    assert any(p.endswith(":8000") for p in services["api"]["ports"])
    assert scrape[0].get("metrics_path", "/metrics") == "/metrics"

    provisioning = on_host("grafana", "/etc/grafana/provisioning")
    source = load_yaml(provisioning / "datasources/prometheus.yml")["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in prometheus["ports"])
    provider = load_yaml(provisioning / "dashboards/socialrec.yml")["providers"][0]
    assert on_host("grafana", provider["options"]["path"]) / "socialrec.json" == DASHBOARD
    home = next(e.split("=", 1)[1] for e in services["grafana"]["environment"]
                if e.startswith("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH="))
    assert on_host("grafana", home) == DASHBOARD
