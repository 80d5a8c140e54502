"""The catalogue's records in Redis (single and cluster): merged writes, idempotence, the change
log every process polls, text vectors tied to the model and the text, and items.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from redis.crc import key_slot

from app.config import Settings
from app.offline.events_export import export_events
from app.store.catalog import CatalogStore, encode_vector
from app.store.keys import Keys
from app.store.redis_store import RedisStore, connect


def catalog(store: RedisStore) -> CatalogStore:
    return CatalogStore(store.client, store.keys)


async def test_writes_merge_fields_and_a_repeat_changes_nothing(store: RedisStore) -> None:
    c = catalog(store)
    assert await c.put([("a", {"title": "Boots", "tags": ["x", "y"], "withdrawn": False}),
                        ("b", {"category": "garden", "withdrawn": False})]) == [2, 2]
    assert await c.put([("a", {"title": "Boots", "withdrawn": False})]) == [0]
    assert await c.put([("a", {"available": False})]) == [1]
    item = await c.get("a")
    assert item is not None
    assert (item.title, item.tags, item.available, item.served) == ("Boots", ("x", "y"), False,
                                                                    False)
    assert await c.get("nobody") is None


async def test_a_bulk_of_1000_records_is_written_within_the_writers_timeout(
        store: RedisStore, store_settings: Settings) -> None:
    """One script stores the whole bulk: far longer than a reply timeout sized for reads
    (here 1 ms), so the records go through the writer's longer one."""
    hasty = connect(store_settings, timeout_s=0.001)
    writer = connect(store_settings, timeout_s=store_settings.catalog_write_timeout_s)
    c = CatalogStore(hasty, store.keys, writer)
    try:
        vector = encode_vector(np.ones(129, dtype=np.float32), "m-1", b"digest00")
        items = [(f"bulk-{n}", {"title": f"Trail product {n}", "category": "outdoor",
                                "tags": ["hiking", "new"], "withdrawn": False})
                 for n in range(1000)]
        assert await c.put(items, {i: vector for i, _ in items}) == [2] * 1000
        page, _ = await catalog(store).changes(0, 5000)
        assert len(page) == 1000
    finally:
        await c.close()
        await hasty.aclose()


async def test_the_change_log_pages_by_whole_generations(store: RedisStore) -> None:
    c = catalog(store)
    await c.put([(f"i{n}", {"title": f"t{n}"}) for n in range(3)])  # generation 1
    await c.put([(f"j{n}", {"title": f"t{n}"}) for n in range(3)])  # generation 2
    await c.put([("i0", {"title": "changed"})])  # generation 3
    page, after = await c.changes(0, 4)  # 4 would cut generation 2: it stops after 1
    assert sorted(i.item_id for i in page) == ["i1", "i2"] and after == 1
    page, after = await c.changes(after, 4)
    assert sorted(i.item_id for i in page) == ["j0", "j1", "j2"] and after == 2
    page, after = await c.changes(after, 4)
    assert [(i.item_id, i.title) for i in page] == [("i0", "changed")] and after == 3
    assert await c.changes(after, 4) == ([], 3)


async def test_a_text_vector_is_used_only_by_its_model_and_for_its_text(
        store: RedisStore) -> None:
    c = catalog(store)
    await c.put([("a", {"title": "Boots"})])
    item = await c.get("a")
    assert item is not None
    vector = np.arange(4, dtype=np.float32)
    await c.save_vectors({"a": encode_vector(vector, "m-1", item.text_digest())})
    item = await c.get("a")
    assert item is not None
    assert np.array_equal(item.item_vector("m-1"), vector)  # type: ignore[arg-type]
    assert item.item_vector("m-2") is None
    await c.put([("a", {"title": "Other boots"})])
    assert (await c.get("a")).item_vector("m-1") is None  # type: ignore[union-attr]


async def test_events_export_writes_the_catalogue_as_items_csv(
        store: RedisStore, store_settings: Settings, tmp_path: Path) -> None:
    c = catalog(store)
    await c.put([("a", {"title": "Boots", "category": "outdoor", "tags": ["hiking", "x"]}),
                 ("b", {"available": False})])  # availability only: no row
    await c.put([("a", {"title": "Better boots"})])
    out = tmp_path / "interactions.csv"
    export_events(out, settings=store_settings, progress=False)
    with (tmp_path / "items.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{"item_id": "a", "title": "Better boots", "category": "outdoor",
                     "tags": "hiking;x"}]


def test_catalogue_keys_share_one_cluster_slot() -> None:
    keys = Keys("sr")
    names = [keys.catalog_item("a"), keys.catalog_item("zz"), keys.catalog_changes,
             keys.catalog_generation]
    assert len({key_slot(n.encode()) for n in names}) == 1
