#!/usr/bin/env python3
"""Soak benchmark: mixed /recommend + /events load at ~70 % of measured capacity for 10 minutes.

    bench/soak [--data data/lastfm] [--minutes 10] [--load 0.7] [--no-docs]

1. reuses (or trains) the lastfm artifacts of bench/load (bench/out/load-model);
2. starts its own redis-server with the append-only file on and `appendfsync always` (as in
   docker-compose.yml) and fills it with `socialrec load`;
3. starts `socialrec serve` (1 worker) pinned to CPU 0, the generators on CPU 1;
4. measures the capacity for the soak's mix with wrk, then runs an open-loop generator
   (Poisson arrivals) for `--minutes`: 90 % GET /recommend (random known user, explain on
   ~10 %), 10 % POST /events (5 events, unique ids) at `--load` × capacity in requests per second,
   with the list cache at `--cache-ttl-s` (the service's default unless given);
5. reports errors (must be 0), p50/p99 per minute, and the API process's resident memory after
   warm-up and at the end (growth must stay under 10 %); writes the "Soak" section of
   docs/BENCHMARKS.md.

All traffic goes to 127.0.0.1; the run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.config import Settings
from bench.common import (
    DOCS,
    LOAD_CPU,
    OUT,
    ROOT,
    SERVER_CPU,
    Server,
    bootstrap,
    checked,
    command_line,
    cpu_seconds,
    cpus_available,
    ensure_artifacts,
    log,
    machine,
    open_loop_requests,
    publish,
    restrict,
    table,
    wrk,
)
from bench.load import cache_counts

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
EVENTS_SHARE, EVENTS_PER_POST, EXPLAIN_SHARE = 0.1, 5, 0.1


def mixed_lua(users: list[str], items: list[str], tag: str) -> str:
    """wrk script with the soak's mix, for measuring the capacity the soak is a share of."""
    pick = "users[math.random(#users)]"
    return f"""
local users = {{{",".join(json.dumps(u) for u in users)}}}
local items = {{{",".join(json.dumps(i) for i in items)}}}
local counter = 0
math.randomseed(os.time())
request = function()
  if math.random() < {EVENTS_SHARE} then
    local parts = {{}}
    for n = 1, {EVENTS_PER_POST} do
      counter = counter + 1
      parts[n] = string.format(
        '{{"event_id":"{tag}-%d-%d","user_id":"%s","type":"listen","item_id":"%s","value":1}}',
        math.random(1e9), counter, {pick}, items[math.random(#items)])
    end
    local body = '{{"events":[' .. table.concat(parts, ",") .. ']}}'
    return wrk.format("POST", "/events", {{["Content-Type"] = "application/json"}}, body)
  end
  local path = "/recommend/" .. {pick} .. "?k=20"
  if math.random() < {EXPLAIN_SHARE} then path = path .. "&explain=true" end
  return wrk.format("GET", path)
end
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def requests(users: list[str], items: list[str], n: int, tag: str) -> list[bytes]:
    """`n` ready HTTP/1.1 requests in the soak's mix; every POST carries fresh event ids."""
    rng = random.Random(11)
    out = []
    for r in range(n):
        if rng.random() < EVENTS_SHARE:
            events = [{"event_id": f"{tag}-{r}-{e}", "user_id": rng.choice(users),
                       "type": "listen", "item_id": rng.choice(items), "value": 1}
                      for e in range(EVENTS_PER_POST)]
            body = json.dumps({"events": events}).encode()
            out.append(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                       b"application/json\r\nContent-Length: " + str(len(body)).encode()
                       + b"\r\n\r\n" + body)
        else:
            path = f"/recommend/{rng.choice(users)}?k=20"
            if rng.random() < EXPLAIN_SHARE:
                path += "&explain=true"
            out.append(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return out


async def soak(server: Server, reqs: list[bytes], rate: float, minutes: int,
               redis_pid: int) -> list[dict[str, Any]]:
    """One open-loop window per minute, back to back; each reports its own p99 and errors, the
    CPU the server spent per request and Redis' CPU share — whether a slower minute is more
    work per request or waiting on something else — and the list cache's hit rate."""
    windows = []
    per_window = len(reqs) // minutes
    server_pid = server.proc.pid
    for m in range(minutes):
        chunk = reqs[m * per_window:(m + 1) * per_window]
        counts = cache_counts(server.base)
        cpu0 = cpu_seconds(server_pid), cpu_seconds(redis_pid), time.perf_counter()
        res = await open_loop_requests("127.0.0.1", server.port, chunk, rate, 60.0, seed=m,
                                       ordered=True)
        elapsed = time.perf_counter() - cpu0[2]
        hits, misses = (cache_counts(server.base)[k] - counts[k] for k in ("hit", "miss"))
        res |= {"minute": m + 1,
                "server_cpu_ms_per_request": 1e3 * (cpu_seconds(server_pid) - cpu0[0])
                / max(res["sent"], 1),
                "redis_cpu_share": (cpu_seconds(redis_pid) - cpu0[1]) / elapsed,
                "hit_rate": hits / max(1.0, hits + misses)}
        windows.append(res)
        log(f"minute {m + 1}: {res['achieved']:.0f} req/s, p99 {res['p99_ms']:.2f} ms, "
            f"server {res['server_cpu_ms_per_request']:.2f} ms CPU/request, Redis CPU "
            f"{res['redis_cpu_share']:.0%}, list cache hits {res['hit_rate']:.0%}, "
            f"errors {res['errors']}")
    return windows


def run(args: argparse.Namespace) -> dict[str, Any]:
    from app.offline.dataset import load_dataset
    from app.serving.artifacts import read_manifest
    from app.tools.local_redis import LocalRedis, free_port

    data_dir = args.data.resolve()
    artifacts = ensure_artifacts(data_dir, args.artifacts.resolve(), retrain=False)
    manifest = read_manifest(artifacts)
    data = load_dataset(data_dir, manifest.event_weights)
    users = list(data.users.ids)
    items = list(data.items.ids)
    cpus = cpus_available()
    pinned = {SERVER_CPU, LOAD_CPU} <= cpus
    server_cpus, load_cpus = ({SERVER_CPU}, {LOAD_CPU}) if pinned else (None, None)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=OUT))
    redis_server = LocalRedis(work / "redis", appendonly=True).start()
    result: dict[str, Any] = {"pinned": pinned, "minutes": args.minutes, "load": args.load}
    try:
        restrict(load_cpus, redis_server.pid, 0)
        env = bootstrap(artifacts, data_dir, redis_server.url)
        env["SOCIALREC_CACHE_TTL_S"] = str(args.cache_ttl_s)
        result["cache_ttl_s"] = args.cache_ttl_s
        lua = work / "mixed.lua"
        lua.write_text(mixed_lua(users, items, f"cap{int(time.time())}"))
        server = Server(free_port(), 1, env, server_cpus, work / "serve.log")
        try:
            server.wait_ready()
            wrk(server.base + "/recommend/x", 5.0, 32, 1, load_cpus, lua)
            capacity = checked(wrk(server.base + "/recommend/x", 10.0, 32, 1, load_cpus, lua),
                               "mixed load")["rps"]
            rate = args.load * capacity
            log(f"capacity {capacity:.0f} req/s; soak at {rate:.0f} req/s for "
                f"{args.minutes} min")
            result |= {"capacity": capacity, "rate": rate,
                       "rss_start_mib": rss_mib(server.proc.pid)}
            reqs = requests(users, items, int(rate * 60 * args.minutes * 1.2),
                            f"soak{int(time.time())}")
            with contextlib.suppress(ImportError):
                import uvloop

                asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            # The generator's own GC pauses would otherwise show up as server latency.
            gc.collect()
            gc.freeze()
            result["windows"] = asyncio.run(soak(server, reqs, rate, args.minutes,
                                                 redis_server.pid))
            result["rss_end_mib"] = rss_mib(server.proc.pid)
        finally:
            server.stop()
    finally:
        redis_server.stop()
    result["machine"] = machine()
    return result


def build_section(res: dict[str, Any], command: str) -> str:
    rows = [["minute", "requests/s", "errors", "p50 ms", "p99 ms", "server CPU ms / request",
             "Redis CPU", "list cache hits"]]
    for w in res["windows"]:
        rows.append([str(w["minute"]), f"{w['achieved']:.0f}", str(w["errors"]),
                     f"{w['p50_ms']:.2f}", f"{w['p99_ms']:.2f}",
                     f"{w['server_cpu_ms_per_request']:.2f}", f"{w['redis_cpu_share']:.0%}",
                     f"{w['hit_rate']:.0%}"])
    cache = (f"the list cache on (`SOCIALREC_CACHE_TTL_S={res['cache_ttl_s']}`; hits: the "
             "share of GET /recommend answered from it)" if res["cache_ttl_s"]
             else "the list cache off (`SOCIALREC_CACHE_TTL_S=0`)")
    errors = sum(w["errors"] for w in res["windows"])
    growth = res["rss_end_mib"] / res["rss_start_mib"] - 1
    return f"""{BEGIN}
## Soak

{res['minutes']} minutes of open-loop mixed load against `socialrec serve` (1 worker, lastfm
model): {1 - EVENTS_SHARE:.0%} `GET /recommend` (explain on {EXPLAIN_SHARE:.0%}),
{EVENTS_SHARE:.0%} `POST /events` with {EVENTS_PER_POST} events each, at {res['load']:.0%} of the
capacity for this same mix measured with wrk (32 connections) in the same run
({res['capacity']:.0f} req/s → {res['rate']:.0f} req/s offered). Redis runs with
`appendonly yes`, `appendfsync always`; the service with {cache}.
Server {'pinned to CPU 0, generators and Redis on CPU 1' if res['pinned'] else 'not pinned'}.

{table(rows)}

- errors: **{errors}** (target 0)
- API process resident memory: {res['rss_start_mib']:.1f} MiB after warm-up →
  {res['rss_end_mib']:.1f} MiB at the end (**{growth:+.1%}**, target < +10 %)

Machine: {res['machine']}.

Command: `{command}`
{END}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "lastfm")
    parser.add_argument("--artifacts", type=Path, default=OUT / "load-model")
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--load", type=float, default=0.7)
    parser.add_argument("--cache-ttl-s", type=int,
                        default=Settings.model_fields["cache_ttl_s"].default,
                        help="the service's SOCIALREC_CACHE_TTL_S (default: the service's)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    res = run(args)
    section = build_section(res, command_line("soak", argv))
    (OUT / "soak.json").write_text(json.dumps(res, indent=2))
    publish(section, "soak", DOCS, BEGIN, END, args.no_docs)
    errors = sum(w["errors"] for w in res["windows"])
    return 0 if errors == 0 and res["rss_end_mib"] < 1.1 * res["rss_start_mib"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
