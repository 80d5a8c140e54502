"""`socialrec retrain`: the holdout and merge rules on small tables, and the whole job end to
end against a real Redis and two running API processes: it promotes a sound model (and both
processes move to it), and refuses one trained on a broken export (and nothing moves)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.cli import main
from app.config import Settings
from app.offline.dataset import InteractionRow, read_interactions
from app.offline.retrain import (
    CURRENT,
    VERSIONS,
    Gate,
    Merged,
    RetrainError,
    merge,
    point_current,
    served_folder,
    time_order,
    write_holdout,
)
from app.serving.artifacts import read_manifest
from app.store.bulk import last_reload
from app.store.keys import Keys
from tests.support.auth import ADMIN_TOKEN
from tests.support.client import app_client
from tests.support.data import scramble_items, split_by_time
from tests.support.models import FAST, train_flags

LIVE_SHARE = 0.25  # of the synthetic shop's rows, posted as live events


def row(user: str, item: str, timestamp: float | None, event: str = "view") -> InteractionRow:
    return InteractionRow(user, item, event, None, timestamp)


# ---------------------------------------------------------------- rules


def test_rows_without_a_timestamp_count_as_recent_as_the_row_before() -> None:
    rows = [row("a", "1", 10), row("a", "2", None), row("b", "3", 5), row("b", "4", None),
            row("c", "5", 20)]
    order, when = time_order(rows)
    assert order == [2, 0, 1, 3, 4]
    assert when == [10, 10, 5, 10, 20]


def test_holdout_is_the_newest_rows_on_items_new_to_the_user(tmp_path: Path) -> None:
    rows = [row("a", str(i), float(i)) for i in range(8)] + [
        row("a", "0", 8.0),  # a repeat of an item the user had before the cut
        row("a", "9", 9.0)]
    merged = Merged(rows=rows, social={}, items={}, counts={})
    info = write_holdout(merged, 0.2, tmp_path)
    assert info["train_until"] == 7.0 and info["holdout_from"] == 8.0
    assert info["repeat_rows_dropped"] == 1
    assert [r.item_id for r in read_interactions(tmp_path / "test.csv")] == ["9"]
    assert len(read_interactions(tmp_path / "train.csv")) == 8


def test_holdout_skips_what_the_served_model_was_trained_on(tmp_path: Path) -> None:
    rows = [row("a", str(i), float(i)) for i in range(10)]
    merged = Merged(rows=rows, social={}, items={}, counts={})
    info = write_holdout(merged, 0.5, tmp_path, served_until=7.0)
    assert info["holdout_from"] == 8.0 and info["test_rows"] == 2
    with pytest.raises(ValueError, match="newer than the served model"):
        write_holdout(merged, 0.5, tmp_path, served_until=9.0)


def test_merge_drops_duplicates_and_erased_users_of_the_base_data(tmp_path: Path) -> None:
    base, live = tmp_path / "base", tmp_path / "live"
    base.mkdir()
    live.mkdir()
    (base / "interactions.csv").write_text(
        "user_id,item_id,event,value,timestamp\n"
        "a,1,view,,10\ngone,1,view,,11\nb,2,view,,12\n", encoding="utf-8")
    (base / "social.csv").write_text("user_id,friend_id,weight\na,b,1\nb,gone,2\nb,a,1\n",
                                     encoding="utf-8")
    (live / "interactions.csv").write_text(
        "user_id,item_id,event,value,timestamp,event_id\n"
        "b,2,view,,12,e1\nb,3,cart,,13,e2\ngone,4,view,,14,e3\n", encoding="utf-8")
    (live / "social_events.csv").write_text(
        "user_id,friend_id,weight,event,timestamp,event_id\n"
        "a,b,,unfollow,15,e4\na,c,2,follow,16,e5\n", encoding="utf-8")
    erased = tmp_path / "erased.txt"
    erased.write_text("# erased on request\ngone\n", encoding="utf-8")
    merged = merge(base, live, erased)
    assert [(r.user_id, r.item_id) for r in merged.rows] == [
        ("a", "1"), ("b", "2"), ("b", "3"),
        ("gone", "4")]  # what the user did after the erasure is new data
    assert merged.social == {("b", "a"): 1.0, ("a", "c"): 2.0}
    assert merged.counts["live_duplicates"] == 1
    assert merged.counts["erased_base_rows"] == 1 and merged.counts["erased_base_edges"] == 1


def test_current_must_be_a_link(tmp_path: Path) -> None:
    assert served_folder(tmp_path) is None
    (tmp_path / VERSIONS / "v1").mkdir(parents=True)
    point_current(tmp_path, tmp_path / VERSIONS / "v1")
    assert (tmp_path / CURRENT).readlink() == Path(VERSIONS) / "v1"  # relative: mountable
    assert served_folder(tmp_path) == (tmp_path / VERSIONS / "v1").resolve()
    (tmp_path / CURRENT).unlink()
    (tmp_path / CURRENT).mkdir()
    with pytest.raises(RetrainError, match="not a link"):
        served_folder(tmp_path)


@pytest.mark.parametrize(("options", "message"), [
    ({"metric": "mrr@10"}, "--metric"), ({"metric": "ndcg@0"}, "--metric"),
    ({"tolerance": 1.0}, "--tolerance"), ({"min_quality": 2.0}, "--min-quality")])
def test_gate_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(RetrainError, match=message):
        Gate(**options)


def test_gate_threshold() -> None:
    assert Gate(tolerance=0.1).threshold(0.5) == pytest.approx(0.45)
    assert Gate(tolerance=0.1, min_quality=0.48).threshold(0.5) == pytest.approx(0.48)
    assert Gate(min_quality=0.3).threshold(None) == 0.3


# ---------------------------------------------------------------- end to end


@dataclass(frozen=True)
class Shop:
    base: Path  # the older rows: the dataset the served model was trained on
    live: list[dict[str, Any]]  # the newer rows, posted as events
    served: Path  # a model trained on `base`


@pytest.fixture(scope="module")
def shop(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    from app.offline.train import train

    folder = tmp_path_factory.mktemp("retrain")
    # live events happen after the served model was trained, as in production
    live = split_by_time(synth_dir, folder / "base", LIVE_SHARE, live_from=time.time() + 3600)
    train(folder / "base", folder / "served", FAST, progress=False)
    return Shop(base=folder / "base", live=live, served=folder / "served")


def deploy(model: Path, root: Path) -> Path:
    """An artifacts root serving `model`, laid out as the job expects."""
    folder = root / VERSIONS / f"20000101T000000Z-{read_manifest(model).model_version}"
    shutil.copytree(model, folder)
    point_current(root, folder)
    return root


async def post_events(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        response = await client.post("/events", json={"events": events[start: start + 1000]})
        assert response.status_code == 202, response.text


async def served_version(client: httpx.AsyncClient) -> str:
    response = await client.get("/recommend/u0001", params={"k": 5})
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


async def run_retrain(*args: str) -> tuple[int, dict[str, Any]]:
    """The command in a thread, so that the API processes of the test keep running."""
    report = Path(args[args.index("--report") + 1])
    code = await asyncio.to_thread(main, ["retrain", *args, *train_flags(FAST),
                                          "--no-progress"])
    return code, json.loads(report.read_text(encoding="utf-8"))


def settings_for(root: Path, redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix, artifacts=root / CURRENT,
                    admin_token=ADMIN_TOKEN)


@pytest.mark.slow
async def test_retrain_promotes_and_every_api_process_follows(
        shop: Shop, tmp_path: Path, redis_url: str, key_prefix: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SOCIALREC_KEY_PREFIX", key_prefix)
    root = deploy(shop.served, tmp_path / "root")
    old = read_manifest(shop.served).model_version
    settings = settings_for(root, redis_url, key_prefix)
    async with app_client(settings) as one, app_client(settings) as two:  # two replicas
        await post_events(one, shop.live)
        assert await served_version(one) == await served_version(two) == old
        # On 200 test users two sound tiny models differ by a few percent either way (the
        # report's bootstrap interval shows it): the tolerance must exceed that noise.
        code, report = await run_retrain(
            "--data", str(shop.base), "--artifacts-root", str(root), "--redis-url", redis_url,
            "--tolerance", "0.1", "--report", str(tmp_path / "report.json"))
        assert code == 0, capsys.readouterr().err[-3000:]
        assert report["status"] == "promoted"
        new = report["new"]["model_version"]
        assert new != old and report["served"]["model_version"] == old
        decision = report["decision"]
        assert decision["new"] >= decision["threshold"] == pytest.approx(
            decision["served"] * (1 - 0.1))
        assert decision["served"] == report["served"]["metrics"]["ndcg@20"]
        # the holdout is live events only: the served model was trained on all the base data
        assert report["data_counts"]["live_rows"] == len(shop.live)
        assert report["holdout"]["test_users"] > 50
        assert report["holdout"]["holdout_from"] > report["served"]["trained_until"]
        folder = Path(report["folder"])
        assert folder.parent == root / VERSIONS and folder.name.endswith(new)
        assert (root / CURRENT).resolve() == folder.resolve()
        assert json.loads((folder / "retrain.json").read_text())["status"] == "promoted"
        assert not list(root.glob(".retrain-*"))  # the work folder with raw events is gone
        out = capsys.readouterr().out.strip().splitlines()
        assert out[-1].startswith(f"promoted {new} ndcg@20 ") and old in out[-1]
        client = redis.Redis.from_url(redis_url)
        try:
            notice = last_reload(client, Keys(key_prefix))
        finally:
            client.close()
        assert notice.version == new and notice.generation == report["reload"]["generation"]
        deadline = time.monotonic() + 10
        while {await served_version(one), await served_version(two)} != {new}:
            assert time.monotonic() < deadline, "the API processes did not follow the reload"
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_retrain_refuses_a_model_trained_on_a_broken_export(
        shop: Shop, tmp_path: Path, redis_url: str, key_prefix: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SOCIALREC_KEY_PREFIX", key_prefix)
    root = deploy(shop.served, tmp_path / "root")
    served = (root / CURRENT).resolve()
    old = read_manifest(shop.served).model_version
    broken = tmp_path / "broken"
    scramble_items(shop.base, broken)
    async with app_client(settings_for(root, redis_url, key_prefix)) as api:
        await post_events(api, shop.live)
        code, report = await run_retrain(
            "--data", str(broken), "--artifacts-root", str(root), "--redis-url", redis_url,
            "--report", str(tmp_path / "report.json"))
        assert code == 1
        assert report["status"] == "refused"
        decision = report["decision"]
        assert decision["new"] < decision["threshold"] < decision["served"]
        assert decision["difference"]["high"] < 0  # clearly worse, not noise
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"error: refused {report['new']['model_version']} ndcg@20 ")
        assert f"{decision['new']:.4f}" in err and f"{decision['served']:.4f}" in err
        assert (root / CURRENT).resolve() == served
        assert [p.name for p in (root / VERSIONS).iterdir()] == [served.name]
        client = redis.Redis.from_url(redis_url)
        try:
            assert last_reload(client, Keys(key_prefix)).generation == 0
        finally:
            client.close()
        assert await served_version(api) == old


def test_a_reload_that_cannot_be_made_puts_current_back(tmp_path: Path) -> None:
    from app.offline.retrain import RetrainOptions, publish
    from app.tools.local_redis import free_port

    root = tmp_path / "root"
    served = root / VERSIONS / "20000101T000000Z-m-old"
    served.mkdir(parents=True)
    point_current(root, served)
    staged = tmp_path / "work" / "model"
    staged.mkdir(parents=True)
    options = RetrainOptions(data_dir=tmp_path, artifacts_root=root,
                             reload_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    settings = Settings(admin_token=ADMIN_TOKEN)
    out = publish(root, staged, "m-new", served, options, None, Keys("unused"), settings, {})
    assert out["status"] == "reload_failed" and "refused" in out["reload"]["error"]
    assert (root / CURRENT).resolve() == served.resolve()
    kept = Path(out["folder"])  # published, not served: the operator may point at it later
    assert kept.parent == root / VERSIONS and kept.name.endswith("-m-new")
    assert json.loads((kept / "retrain.json").read_text())["status"] == "reload_failed"
