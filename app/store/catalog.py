"""The live catalogue in Redis: item records written by the catalogue API, a change log every API
process polls, and each record's text vector for the model that computed it.

All catalogue keys share the hash tag `{cat}` (app.store.keys), so one Lua script writes a whole
bulk request atomically on a single Redis and on Redis Cluster alike. A record is never
deleted: a withdrawal is a field of it, so every process learns of it through the same change
log as any other change.

Change log: every write that changes a record takes the next catalogue generation (one per
script call) and sets the record's score in the `changes` ZSET to it. A process that has applied
everything up to generation g reads the records scored above g — one ZRANGEBYSCORE per poll, an
empty answer when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from app.store.keys import Keys

# Connections of the catalogue's writer client per process: writes are rare, a few at once.
WRITE_CONNECTIONS = 4
# What a caller may set; `vector` is written beside them but is not part of the record's content.
FIELDS = ("title", "category", "tags", "description", "available", "withdrawn")
_VECTOR_TAG = b"\x01"

PUT_ITEMS = """
-- KEYS: generation, changes, then one record key per item
-- ARGV: per item: item_id, number of field/value pairs n, the n pairs
-- A record whose given fields (all but `vector`) already hold the given values is left alone,
-- so a repeated write changes nothing and is not logged again. Every record changed by this
-- call gets the same new generation. Returns per item: 0 unchanged, 1 updated, 2 created.
local at, gen, out = 1, nil, {}
for k = 3, #KEYS do
  local id, n = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  local exists = redis.call('EXISTS', KEYS[k]) == 1
  local differs = not exists
  for f = 0, n - 1 do
    local field, value = ARGV[at + 2 * f], ARGV[at + 2 * f + 1]
    if field ~= 'vector' and redis.call('HGET', KEYS[k], field) ~= value then
      differs = true
    end
  end
  for f = 0, n - 1 do
    local field, value = ARGV[at + 2 * f], ARGV[at + 2 * f + 1]
    if differs or field == 'vector' then
      redis.call('HSET', KEYS[k], field, value)
    end
  end
  at = at + 2 * n
  if differs then
    if not gen then gen = redis.call('INCR', KEYS[1]) end
    redis.call('HSET', KEYS[k], 'gen', gen)
    redis.call('ZADD', KEYS[2], gen, id)
    out[#out + 1] = exists and 1 or 2
  else
    out[#out + 1] = 0
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One item as the catalogue API described it. `vector` is the raw text-vector entry
    (`item_vector` reads it for one model version)."""

    item_id: str
    title: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    description: str = ""
    available: bool = True
    withdrawn: bool = False
    generation: int = 0
    vector: bytes | None = None

    @property
    def served(self) -> bool:
        """May be recommended: available and not withdrawn."""
        return self.available and not self.withdrawn

    def item_vector(self, version: str) -> np.ndarray | None:
        """The text vector model `version` computed from the record's current text, or None
        (absent, another model's, or computed from text the record no longer has)."""
        tag = version.encode() + _VECTOR_TAG + self.text_digest()
        if self.vector is None or not self.vector.startswith(tag):
            return None
        body = self.vector[len(tag):]
        if len(body) < 4 or len(body) % 4:
            return None
        (dim,) = struct.unpack_from("=I", body)
        if len(body) != 4 + 4 * dim:
            return None
        return np.frombuffer(body, np.float32, dim, 4)

    def text_digest(self) -> bytes:
        return text_digest(self.title, self.category, self.tags, self.description)


def text_digest(title: str, category: str, tags: Sequence[str], description: str) -> bytes:
    """8 bytes that change with any text field: ties a stored vector to the text it encodes."""
    text = json.dumps([title, category, list(tags), description], ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def encode_vector(vector: np.ndarray, version: str, digest: bytes) -> bytes:
    """model version + 0x01 + text digest (8 bytes) + uint32 dim + float32[dim]."""
    v = np.asarray(vector, dtype=np.float32)
    return (version.encode() + _VECTOR_TAG + digest + struct.pack("=I", len(v))
            + v.tobytes())


def whole_generations(entries: list[tuple[str, int]], limit: int,
                      after: int) -> tuple[list[tuple[str, int]], int]:
    """A page of (item_id, generation) read after generation `after` by score, cut so that it
    ends on a whole generation, and the generation to read after next."""
    if len(entries) == limit and entries[0][1] != entries[-1][1]:
        entries = [e for e in entries if e[1] != entries[-1][1]]
    return entries, entries[-1][1] if entries else after


def record_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Redis hash values of the given fields: tags as a JSON list, flags as 0/1."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        if name not in FIELDS:
            raise ValueError(f"unknown catalogue field {name!r}")
        if name == "tags":
            out[name] = json.dumps(list(value), ensure_ascii=False)
        elif name in ("available", "withdrawn"):
            out[name] = "1" if value else "0"
        else:
            out[name] = str(value)
    return out


def parse_item(item_id: str, raw: Mapping[Any, Any]) -> CatalogItem | None:
    """A record as HGETALL returns it (bytes or str), or None when absent."""
    if not raw:
        return None
    fields = {_s(k): v for k, v in raw.items()}
    text = {k: _s(v) for k, v in fields.items() if k != "vector"}
    vector = fields.get("vector")
    return CatalogItem(item_id=item_id, title=text.get("title", ""),
                       category=text.get("category", ""),
                       tags=tuple(json.loads(text.get("tags", "[]"))),
                       description=text.get("description", ""),
                       available=text.get("available", "1") == "1",
                       withdrawn=text.get("withdrawn", "0") == "1",
                       generation=int(text.get("gen", "0")),
                       vector=vector if isinstance(vector, bytes) or vector is None
                       else vector.encode())


class CatalogStore:
    """Catalogue reads on the service's Redis client; record writes on `writer` (default:
    the same client), a client whose reply timeout fits a script storing a 1,000-item bulk."""

    def __init__(self, client: aioredis.Redis | RedisCluster, keys: Keys,
                 writer: aioredis.Redis | RedisCluster | None = None) -> None:
        self.client = client
        self.keys = keys
        self.writer = client if writer is None else writer
        self._put = self.writer.register_script(PUT_ITEMS)

    async def close(self) -> None:
        """Close the writer when it is a client of its own."""
        if self.writer is not self.client:
            await self.writer.aclose()

    async def put(self, items: Sequence[tuple[str, Mapping[str, Any]]],
                  vectors: Mapping[str, bytes] | None = None) -> list[int]:
        """Create or update records in one atomic script: (item_id, fields) each, only the
        given fields change; `vectors` (item_id → `encode_vector`) are stored beside. Per item:
        0 unchanged, 1 updated, 2 created."""
        vectors = vectors or {}
        keys = [self.keys.catalog_generation, self.keys.catalog_changes]
        args: list[Any] = []
        for item_id, fields in items:
            pairs: list[Any] = [x for kv in record_fields(fields).items() for x in kv]
            if item_id in vectors:
                pairs += ["vector", vectors[item_id]]
            keys.append(self.keys.catalog_item(item_id))
            args += [item_id, len(pairs) // 2, *pairs]
        return [int(r) for r in await self._put(keys=keys, args=args)]

    async def get(self, item_id: str) -> CatalogItem | None:
        return parse_item(item_id, await self.client.hgetall(self.keys.catalog_item(item_id)))

    async def get_many(self, item_ids: Sequence[str]) -> list[CatalogItem | None]:
        """Several records in one round trip (all in the `{cat}` slot)."""
        if not item_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.hgetall(self.keys.catalog_item(item_id))
            raws = await pipe.execute()
        return [parse_item(i, raw) for i, raw in zip(item_ids, raws, strict=True)]

    async def changes(self, after: int, limit: int) -> tuple[list[CatalogItem], int]:
        """Records changed after generation `after` (at most `limit`, at least one whole
        generation: a bulk write is one generation of at most `limit` items) and the generation
        to ask after next time. A page never ends inside a generation, so none is skipped."""
        changed = cast("list[tuple[bytes, float]]", await self.client.zrangebyscore(
            self.keys.catalog_changes, f"({after}", "+inf", start=0, num=limit, withscores=True))
        entries, after = whole_generations([(_s(i), int(g)) for i, g in changed], limit, after)
        read = await self.get_many([item_id for item_id, _ in entries])
        return [item for item in read if item is not None], after

    async def save_vectors(self, vectors: Mapping[str, bytes]) -> None:
        """Store text vectors computed for existing records (not a change of the record)."""
        if not vectors:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for item_id, raw in vectors.items():
                pipe.hset(self.keys.catalog_item(item_id), "vector", raw)
            await pipe.execute()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
