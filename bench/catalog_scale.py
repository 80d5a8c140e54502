"""Live catalogue at scale: bulk-load new products through POST /items, then /recommend
throughput with them in the side index vs without them, in the same run.

    python -m bench.catalog_scale [--artifacts model_artifacts/demo] [--items 10000]
                                  [--duration 10] [--rounds 3] [--no-docs]

1. starts its own redis-server on a free loopback port and loads the artifacts' dataset
   (`<artifacts>/data`, as `make run` does) under two key prefixes: `with` and `without`;
2. starts four `socialrec serve --workers 1` on the same artifacts: per prefix one with the
   default list cache and one without it (`SOCIALREC_CACHE_TTL_S=0`: every request computes
   its list, the side index searched every time), all pinned to CPU 0 (the load generator and
   Redis on CPU 1);
3. POSTs `--items` new products (synthetic titles, categories and tags in the shop's words,
   none known to the model) to the `with` server in batches of 1,000: wall time and items/s,
   which include computing every text vector (the item text encoder) and storing the records;
   the server's RSS and Redis' used memory before and after give the memory per live item
   (after a warm-up post of a few products);
4. wrk drives GET /recommend (random known user, k=20, ~10 % explain) at saturation. Each
   round measures the two servers of a cache setting back to back (which goes first
   alternates) and gives that round's with / without ratio; the figure is the median of the
   rounds' ratios, with their range (target ≥ 0.9 with the default settings). Right before
   each measurement every user is asked for once, so each server's lists and vectors are
   cached as under steady traffic (a server's lists expire between its rounds, which would
   otherwise open each round with a miss per user); the server's own list-cache counts give
   each run's hit rate;
5. prints the table and writes the "Live catalogue at scale" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    DOCS,
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    Server,
    as_published,
    busy_note,
    checked,
    cpu_seconds,
    cpus_available,
    log,
    machine,
    process_tree,
    publish,
    recommend_lua,
    restrict,
    socialrec,
    table,
    wrk,
)
from bench.load import cache_counts

BEGIN, END = "<!-- catalog-scale:begin -->", "<!-- catalog-scale:end -->"
TOKEN = "bench-catalog-token"
BATCH = 1000
WARM_UP = 50  # products posted before the measured load (in the side index too)
TARGET = 0.9
# (name, live items in its prefix, list cache): the target is on the default settings; the
# servers without the list cache show the side index's cost on every request
SERVERS = (("without", "without", True), ("with", "with", True),
           ("without, no list cache", "without", False), ("with, no list cache", "with", False))
# the servers compared within each round: (without live items, with them)
PAIRS = (("without", "with"), ("without, no list cache", "with, no list cache"))
WORDS = ("trail", "light", "classic", "pro", "compact", "urban", "eco", "deluxe", "mini",
         "travel", "smart", "soft", "steel", "wool", "carbon", "everyday", "studio", "max")


def products(n: int, categories: list[str], tags: list[str], seed: int = 0) -> list[dict[str,
                                                                                            Any]]:
    """`n` new products described in the shop's own categories and tags."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        category = rng.choice(categories)
        words = rng.sample(WORDS, 2)
        out.append({"item_id": f"scale-{i:06d}",
                    "title": f"{words[0].title()} {category} {words[1]} {i}",
                    "category": category, "tags": rng.sample(tags, min(3, len(tags))),
                    "description": f"A {words[0]} {category} product for {rng.choice(tags)}."})
    return out


def post(base: str, path: str, body: Any, timeout: float = 600.0) -> dict[str, Any]:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"POST {path}: {exc.code} {exc.read()[:500]!r}") from None


def get(base: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def wait_applied(servers: list[Server], timeout: float = 30.0) -> int:
    """Wait until every server's catalogue poll has applied the same last generation (the
    `socialrec_catalog_generation` gauge, stable over two reads); returns it."""
    deadline = time.monotonic() + timeout
    last: set[int] = set()
    while time.monotonic() < deadline:
        now = {catalog_generation(s.base) for s in servers}
        if len(now) == 1 and now == last:
            return now.pop()
        last = now
        time.sleep(0.5)
    raise RuntimeError(f"the servers' catalogue generations did not settle: {sorted(last)}")


def warm_lists(base: str, users: list[str]) -> None:
    """Ask for every user's list once, in order, on one connection: afterwards each list
    (and vector) is cached, as it is under steady traffic, whatever expired since."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for user in users:
            connection.request("GET", f"/recommend/{user}?k=20")
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"warm-up: /recommend/{user} answered {answer.status}")
    finally:
        connection.close()


def catalog_generation(base: str) -> int:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith("socialrec_catalog_generation"):
            return int(float(line.rsplit(" ", 1)[1]))
    raise RuntimeError("/metrics has no socialrec_catalog_generation")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def redis_used(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from app.offline.dataset import read_items
    from app.serving.artifacts import read_manifest
    from app.tools.local_redis import LocalRedis, free_port

    artifacts = args.artifacts.resolve()
    data_dir = artifacts / "data"
    manifest = read_manifest(artifacts)
    meta = read_items(data_dir / "items.csv")
    categories = sorted({m.category for m in meta.values() if m.category})
    tags = sorted({t for m in meta.values() for t in m.tags})
    users = sorted({line.split(",", 1)[0] for line in
                    (data_dir / "interactions.csv").read_text().splitlines()[1:]})
    cpus = cpus_available()
    server_cpus = {SERVER_CPU} if len(cpus) > 1 else None
    load_cpus = {LOAD_CPU} if len(cpus) > 1 else None
    work = Path(tempfile.mkdtemp(prefix="socialrec-catalog-scale-"))
    redis_server = LocalRedis(work / "redis").start()
    servers: dict[str, Server] = {}
    try:
        restrict(load_cpus, redis_server.pid, 0)
        for n, (name, prefix, list_cache) in enumerate(SERVERS):
            env = dict(os.environ, SOCIALREC_ARTIFACTS=str(artifacts),
                       SOCIALREC_REDIS_URL=redis_server.url, SOCIALREC_KEY_PREFIX=prefix,
                       SOCIALREC_CATALOG_TOKEN=TOKEN)
            env.pop("SOCIALREC_ADMIN_TOKEN", None)
            if list_cache:
                env.pop("SOCIALREC_CACHE_TTL_S", None)
                subprocess.run([*socialrec(), "load", str(artifacts), str(data_dir)], env=env,
                               check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=600)
            else:
                env["SOCIALREC_CACHE_TTL_S"] = "0"
            servers[name] = Server(free_port(), 1, env, server_cpus, work / f"server{n}.log")
        for server in servers.values():
            server.wait_ready()
        target = servers["with"]
        for user in users[:50]:  # warm both servers' code paths and vector caches
            for server in servers.values():
                get(server.base, f"/recommend/{user}?k=20")
        # a few products first, so the text encoder's working memory is not counted per item
        warm = [{**p, "item_id": f"warm-{p['item_id']}"}
                for p in products(WARM_UP, categories, tags, seed=1)]
        post(target.base, "/items", {"items": warm})
        time.sleep(1.0)
        rss_before, redis_before = rss_bytes(target.proc.pid), redis_used(redis_server.url)
        new = products(args.items, categories, tags)
        log(f"POST /items: {len(new)} new products in batches of {BATCH}")
        started = time.perf_counter()
        batches = []
        for s in range(0, len(new), BATCH):
            t0 = time.perf_counter()
            answer = post(target.base, "/items", {"items": new[s: s + BATCH]})
            batches.append(time.perf_counter() - t0)
            if answer.get("created") != len(new[s: s + BATCH]):
                raise RuntimeError(f"POST /items answered {answer}")
        load_s = time.perf_counter() - started
        applied = wait_applied([servers[name] for name, prefix, _ in SERVERS
                                if prefix == "with"])
        rss_after, redis_after = rss_bytes(target.proc.pid), redis_used(redis_server.url)
        sample = [get(target.base, f"/items/{p['item_id']}")
                  for p in random.Random(1).sample(new, 20)]
        sources = sorted({s.get("vector_source", "?") for s in sample})
        live = sum(1 for s in sample if s.get("vector_source") == "text")
        # a new product shows up: ask for lists in its category until one carries a new item
        reached = 0
        for user in users[:100]:
            body = get(target.base, f"/recommend/{user}?k=20&category={new[0]['category']}")
            reached += any(i["item_id"].startswith("scale-") for i in body["items"])
        script = work / "recommend.lua"
        script.write_text(recommend_lua(users, 0.1))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in SERVERS}
        for r in range(args.rounds):
            for pair in PAIRS:
                for name in pair if r % 2 == 0 else pair[::-1]:
                    server = servers[name]
                    warm_lists(server.base, users)
                    log(f"round {r + 1}: /recommend on the server {name}")
                    pid = server.proc.pid
                    cpu, counts = cpu_seconds(pid), cache_counts(server.base)
                    run = checked(wrk(server.base + "/", args.duration, 32, 1, load_cpus,
                                      script), f"recommend {name}")
                    # CPU time per answered request: unlike req/s, it does not move with
                    # what else runs on the server's CPU
                    run["cpu_ms"] = (cpu_seconds(pid) - cpu) * 1e3 / max(1, run["requests"])
                    after = cache_counts(server.base)
                    hits, misses = (after[k] - counts[k] for k in ("hit", "miss"))
                    run["hit_rate"] = hits / (hits + misses) if hits + misses else None
                    runs[name].append(run)
    finally:
        for server in servers.values():
            server.stop()
        redis_server.stop()
    rps = {name: statistics.median(r["rps"] for r in rs) for name, rs in runs.items()}
    return {"items": args.items, "load_s": load_s, "batch_s": batches,
            "rss_per_item": (rss_after - rss_before) / args.items,
            "redis_per_item": (redis_after - redis_before) / args.items,
            "sources": sources, "sampled_text": live, "lists_with_new": reached,
            "generation": applied,
            "runs": runs, "rps": rps, "manifest": manifest, "users": len(users),
            "duration": args.duration, "rounds": args.rounds,
            "load_average": os.getloadavg()}


def paired(runs: dict[str, list[dict[str, Any]]], key: str) -> dict[str, list[float]]:
    """Per round, with / without live items of each pair (`key`: "rps"), or without / with
    for a cost ("cpu_ms"): either way above 1 means the live items cost nothing."""
    out = {}
    for without, with_ in PAIRS:
        pairs = zip(runs[without], runs[with_], strict=True)
        out[with_] = [w[key] / o[key] if key == "rps" else o[key] / w[key] for o, w in pairs]
    return out


def spread(ratios: list[float], note: str = "") -> str:
    return (f"**{statistics.median(ratios):.3f}** (rounds {min(ratios):.3f}–"
            f"{max(ratios):.3f}{note})")


def section(result: dict[str, Any], info: str, command: str) -> str:
    rps = result["rps"]
    cpu = {name: statistics.median(r["cpu_ms"] for r in runs)
           for name, runs in result["runs"].items()}
    ratios, cpu_ratios = paired(result["runs"], "rps"), paired(result["runs"], "cpu_ms")
    cached, uncached = ratios["with"], ratios["with, no list cache"]
    ratio = statistics.median(cached)
    m = result["manifest"]
    rows = [["GET /recommend (1 worker, saturated)", "median req/s", "rounds (req/s)",
             "with / without per round", "p99 ms (median)",
             "server CPU ms per request (median)", "list-cache hits (median)"]]
    for name, _, list_cache in SERVERS:
        runs = result["runs"][name]
        label = ("no live items" if name.startswith("without")
                 else f"{result['items']:,} live items in the side index")
        hit_rates = [r["hit_rate"] for r in runs if r["hit_rate"] is not None]
        rows.append([label + ("" if list_cache else ", no list cache"), f"{rps[name]:.0f}",
                     ", ".join(f"{r['rps']:.0f}" for r in runs),
                     ", ".join(f"{x:.2f}" for x in ratios[name]) if name in ratios else "",
                     f"{statistics.median(r['p99_ms'] for r in runs):.1f}",
                     f"{cpu[name]:.2f}",
                     f"{statistics.median(hit_rates):.1%}" if hit_rates else "off"])
    batches = result["batch_s"]
    lines = [
        BEGIN,
        "## Live catalogue at scale",
        "",
        f"Model `{m.model_version}` ({m.item_count:,} items, dim {m.embedding_dim}, FAISS "
        f"{m.index.kind}), its shop's {result['users']} users loaded into a redis-server of the "
        "benchmark's own. Four `socialrec serve --workers 1` on the same artifacts and Redis, "
        "all pinned to CPU 0 (wrk and Redis on CPU 1): under one key prefix the shop as "
        "trained, under another the same shop with the new products; for each, one server "
        "with the default settings (the list cache on) and one with `SOCIALREC_CACHE_TTL_S=0`, "
        "where every request computes its list and so searches the side index.",
        "",
        f"**Bulk load**: {result['items']:,} new products (title, category, three tags, a "
        f"sentence) through `POST /items` in batches of {BATCH:,}: "
        f"{result['load_s']:.1f} s, **{result['items'] / result['load_s']:.0f} items/s**, "
        f"including the text encoder's vector for every product and the durable records "
        f"(per batch {min(batches):.1f}–{max(batches):.1f} s). A sample of 20 reads back with "
        f"vector_source {', '.join(result['sources'])} ({result['sampled_text']} of 20 "
        f"`text`); {result['lists_with_new']} of 100 users' lists filtered to the first "
        "product's category carry at least one of the new products.",
        "",
        f"**Memory per live item**: {result['rss_per_item']:,.0f} bytes of the API process's "
        f"RSS (side index row, metadata, the poll's record copy; measured as the RSS growth "
        f"over the load, so allocator slack and the encoder's working buffers count too) and "
        f"{result['redis_per_item']:,.0f} bytes of Redis `used_memory` (the durable record "
        "with its stored text vector). Each API process holds its own copy. The server "
        f"with live items holds {WARM_UP} more, posted first so that the text encoder's "
        "working memory is not counted per item.",
        "",
        table(rows),
        "",
        "With / without live items, default settings: "
        f"{spread(cached, f'; target ≥ {TARGET}: ' + ('met' if ratio >= TARGET else 'missed'))}"
        "; without the list cache: "
        f"{spread(uncached)}{busy_note(result['runs']['with'])}. Each ratio is one round's: "
        "the servers with and without live items of one cache setting measured back to back "
        f"(which one first alternates by round); {result['rounds']} rounds of "
        f"{result['duration']:g} s per server; 32 connections, a random known user per "
        "request, explain on ~10 %. Right before each measurement every user is asked for "
        "once, so each server starts its run with every list and vector cached, as under "
        "steady traffic: with the default TTL a server's lists expire between its rounds, "
        "which would otherwise open each run with a miss per user (the hit rates above are "
        "the server's own count over each run). The server's CPU time per request, which "
        "other load on its CPU does not move the way it moves req/s, gives "
        f"{spread(cpu_ratios['with'])} with the list cache and "
        f"{spread(cpu_ratios['with, no list cache'])} without it (without / with, per "
        "round). Both servers with live items had applied catalogue generation "
        f"{result['generation']:,} before the first round.",
        "",
        f"Machine: {info}; load average at the end "
        f"{', '.join(f'{v:.1f}' for v in result['load_average'])}.",
        "",
        f"Command: `{command}`",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "model_artifacts" / "demo",
                        help="a model with an item text encoder and its dataset in ./data")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.items < 1 or args.rounds < 1 or args.duration <= 0:
        parser.error("--items, --rounds and --duration must be positive")
    result = run(args)
    command = " ".join(["python -m bench.catalog_scale",
                        *(shlex.quote(as_published(a)) for a in argv or sys.argv[1:])])
    publish(section(result, machine(), command),
            "catalog scale", args.docs, BEGIN, END, args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
