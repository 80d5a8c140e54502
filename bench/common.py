"""What the benchmarks share: the machine's description, markdown tables, a section of
docs/BENCHMARKS.md between markers, the `socialrec` command, and the serving-under-load kit
(a pinned `socialrec serve`, wrk, an open-loop generator, CPU busy shares)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DOCS = ROOT / "docs" / "BENCHMARKS.md"
SERVING_LIBS = ("numpy", "onnxruntime", "faiss-cpu", "fastapi", "starlette", "pydantic",
                "uvicorn", "uvloop", "httptools", "orjson", "redis", "hiredis")


def machine(libs: tuple[str, ...] = SERVING_LIBS) -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for name in libs:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    tools = []
    for tool, flag in (("wrk", "-v"), ("redis-server", "--version")):
        path = shutil.which(tool)
        if path:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([path, flag], capture_output=True, text=True, timeout=5)
                tools.append((out.stdout + out.stderr).strip().splitlines()[0][:60])
    return (f"{os.cpu_count()} cores (`nproc`), {cpu}; {platform.platform()}; Python "
            f"{platform.python_version()}; {', '.join(versions)}"
            + (f"; {'; '.join(tools)}" if tools else ""))


def table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def command_line(tool: str, argv: list[str] | None) -> str:
    """How the benchmark was run, for its docs section: `bench/TOOL` and its arguments, with
    paths named as a reader has them (see `as_published`)."""
    return " ".join([f"bench/{tool}",
                     *(shlex.quote(as_published(a)) for a in argv or sys.argv[1:])])


def as_published(arg: str) -> str:
    """An absolute path as the docs name it: relative inside the repository, and a dataset
    folder kept anywhere on the machine as `data/NAME` (the layout the docs tell users to
    use), so a section never carries one machine's private paths."""
    path = Path(arg)
    if not path.is_absolute():
        return arg
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    if "datasets" in path.parts[:-1]:
        return str(Path("data", *path.parts[path.parts.index("datasets") + 1:]))
    return arg


def publish(section: str, name: str, docs: Path, begin: str, end: str, no_docs: bool) -> None:
    """Print a benchmark's section and, unless `no_docs`, write it into `docs`."""
    print(section)
    if not no_docs:
        write_section(docs, begin, end, section)
        print(f"wrote the {name} section of {docs}")


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Replace the text between `begin` and `end` (markers included) or append the section;
    everything else in the file is left as it is."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def socialrec() -> list[str]:
    """The console script as a user runs it (the venv's, else PATH's, else the module)."""
    venv = ROOT / ".venv" / "bin" / "socialrec"
    if venv.exists():
        return [str(venv)]
    found = shutil.which("socialrec")
    return [found] if found else [sys.executable, "-m", "app.cli"]


def bootstrap(artifacts: Path, data_dir: Path, redis_url: str) -> dict[str, str]:
    """`socialrec load` the dataset into `redis_url`; returns the environment for a
    `socialrec serve` on those artifacts and that Redis (admin routes off)."""
    subprocess.run([*socialrec(), "load", str(artifacts), str(data_dir), "--redis-url",
                    redis_url], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=600)
    env = dict(os.environ, SOCIALREC_ARTIFACTS=str(artifacts), SOCIALREC_REDIS_URL=redis_url)
    env.pop("SOCIALREC_ADMIN_TOKEN", None)
    return env


# ----------------------------------------------------------------------------- serving under load

SERVER_CPU, LOAD_CPU = 0, 1
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
IDLE_REUSE_S = 3.0  # uvicorn closes keep-alive connections idle for 5 s


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# The CPUs this benchmark may use, as it found them: it narrows its own affinity later (to run
# generators beside Redis), and pinning the server must not be checked against that.
_CPUS = frozenset(os.sched_getaffinity(0))


def cpus_available() -> set[int]:
    return set(_CPUS)


def pin(cpus: set[int] | None) -> list[str]:
    """A taskset prefix, or nothing when pinning is not possible here."""
    if cpus is None or not shutil.which("taskset") or not cpus <= cpus_available():
        return []
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


def restrict(cpus: set[int] | None, *pids: int) -> None:
    """Pin processes (0: this one, and the generators it starts) to `cpus`; None: pinning is
    off here."""
    if cpus is not None:
        for pid in pids:
            os.sched_setaffinity(pid, cpus)


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (uvicorn's worker is a child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its children have used so far."""
    ticks = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def ensure_artifacts(data_dir: Path, out: Path, retrain: bool) -> Path:
    from app.offline.dataset import interactions_file
    from app.offline.export import fingerprint
    from app.serving.artifacts import ArtifactError, read_manifest

    read = [interactions_file(data_dir)] + [data_dir / n for n in ("social.csv", "items.csv")
                                            if (data_dir / n).is_file()]
    wanted = fingerprint(read)
    if not retrain:
        try:
            if read_manifest(out).training_data_fingerprint == wanted:
                log(f"reusing artifacts {out} (same dataset fingerprint)")
                return out
        except ArtifactError:
            pass
    log(f"training on {data_dir} → {out} (socialrec train)")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([*socialrec(), "train", str(data_dir), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL, timeout=1800)
    log(f"trained in {time.perf_counter() - started:.0f} s")
    return out


class Server:
    """`socialrec serve` in its own process group; stop() ends exactly that group."""

    def __init__(self, port: int, workers: int, env: dict[str, str], cpus: set[int] | None,
                 logfile: Path) -> None:
        self.port, self.workers, self.cpus = port, workers, cpus
        self.cmd = [*pin(cpus), *socialrec(), "serve", "--host", "127.0.0.1", "--port",
                    str(port), "--workers", str(workers)]
        self.log = logfile.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"socialrec serve exited with {self.proc.returncode}")
            # every worker must be up: a few more /readyz in a row
            if all(http_get(self.base + "/readyz", 1.0)[0] == 200 for _ in range(20)):
                return
            time.sleep(0.2)
        raise RuntimeError("socialrec serve did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ----------------------------------------------------------------------------- wrk

def lua_strings(values: list[str]) -> str:
    return "{" + ",".join(json.dumps(v) for v in values) + "}"


LUA_COMMON = """
local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  math.randomseed(os.time() * 1000 + tid * 7919)
  math.random(); math.random()
end
"""


def recommend_lua(users: list[str], explain_share: float) -> str:
    return f"""
local users = {lua_strings(users)}
{LUA_COMMON}
request = function()
  local path = "/recommend/" .. users[math.random(#users)] .. "?k=20"
  if math.random() < {explain_share} then path = path .. "&explain=true" end
  return wrk.format("GET", path)
end
"""


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _wrk_field(pattern: str, out: str) -> str:
    found = re.search(pattern, out)
    if found is None:
        raise RuntimeError(f"wrk printed no {pattern!r}:\n{out}")
    return found.group(1)


def wrk(url: str, seconds: float, connections: int, threads: int, cpus: set[int] | None,
        script: Path | None = None) -> dict[str, Any]:
    cmd = [*pin(cpus), "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
           "--latency", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    before = cpu_ticks()
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    busy = cpu_busy(before, cpu_ticks())
    rps = float(_wrk_field(r"Requests/sec:\s+([\d.]+)", out))
    total = int(_wrk_field(r"(\d+) requests in", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    non2xx = int(bad.group(1)) if bad else 0
    socket_errors = sum(map(int, sock.groups())) if sock else 0
    errors = min(total, non2xx + socket_errors)
    # "rps" counts successful answers only: a failed request is no throughput
    return {"rps": rps * (1 - errors / max(total, 1)), "rps_all": rps, "requests": total,
            "errors": errors, "non2xx": non2xx, "socket_errors": socket_errors,
            "p50_ms": lat.get("50", float("nan")), "p99_ms": lat.get("99", float("nan")),
            "cpu_busy": busy}


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat (empty where it cannot be read)."""
    out: dict[int, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                ticks = [int(f) for f in fields[:8]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def cpu_busy(before: dict[int, tuple[int, int]],
             after: dict[int, tuple[int, int]]) -> dict[int, float]:
    """Share of time each CPU was busy between two `cpu_ticks` readings (whole machine:
    whatever else runs on it counts too)."""
    return {c: (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1])
            for c in sorted(after) if c in before}


def busy_note(runs: list[dict[str, Any]]) -> str:
    cpus = sorted({c for r in runs for c in r.get("cpu_busy", {})})
    if not cpus:
        return ""
    shares = [f"CPU {c} {np.median([r['cpu_busy'][c] for r in runs]):.0%}" for c in cpus]
    return "; busy " + ", ".join(shares)


def checked(result: dict[str, Any], what: str) -> dict[str, Any]:
    """Failed requests are reported (and left out of the throughput), never hidden."""
    if result["errors"]:
        log(f"WARNING {what}: {result['errors']} of {result['requests']} requests failed "
            f"({result['non2xx']} non-2xx, {result['socket_errors']} socket errors)")
    return result


# ----------------------------------------------------------------------------- open loop

async def open_loop_requests(host: str, port: int, paths: list[bytes], rate: float, seconds: float,
                     seed: int, max_connections: int = 512,
                     ordered: bool = False) -> dict[str, Any]:
    """Poisson arrivals at `rate`/s for `seconds`, whatever the server does (open loop): a
    request that finds no idle connection waits for one (or opens one), and that wait counts.
    Latency runs from the moment the generator dispatched the request (timer granularity of
    the generator itself excluded; its lag behind the schedule is reported).

    `paths` are GET paths (b"/recommend/…") or whole raw HTTP/1.1 requests (b"POST …"),
    picked at random, or in order (cycling) with `ordered`. Any 2xx answer is a success."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter  # loop.time() has millisecond resolution under uvloop
    rng = random.Random(seed)
    idle: list[tuple[float, Connection]] = []
    waiters: deque[asyncio.Future[Connection]] = deque()
    opened = 0
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    error_kinds: dict[str, int] = {}

    async def connection() -> Connection:
        nonlocal opened
        while idle:
            used, conn = idle.pop()
            if clock() - used < IDLE_REUSE_S:
                return conn
            opened -= 1  # the server may have closed it (keep-alive timeout): not reused
            conn[1].close()
        if opened < max_connections:
            opened += 1
            try:
                return await asyncio.open_connection(host, port)
            except BaseException:
                opened -= 1
                raise
        fut: asyncio.Future[Connection] = loop.create_future()
        waiters.append(fut)
        return await fut

    def release(conn: Connection) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        idle.append((clock(), conn))

    async def one(path: bytes, t0: float) -> None:
        nonlocal errors, opened
        conn = None
        try:
            conn = await connection()
            reader, writer = conn
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                         if path.startswith(b"/") else path)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length is None:
                raise ConnectionError("an answer without Content-Length")
            await reader.readexactly(int(length.group(1)))
            latencies.append(clock() - t0)
            if head[9:10] != b"2":
                errors += 1
                kind = "HTTP " + head[9:12].decode(errors="replace")
                error_kinds[kind] = error_kinds.get(kind, 0) + 1
            release(conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            errors += 1
            error_kinds[type(exc).__name__] = error_kinds.get(type(exc).__name__, 0) + 1
            if conn is not None:
                opened -= 1
                conn[1].close()

    tasks = set()
    start = clock() + 0.05
    due = start
    end = start + seconds
    while due < end:
        now = clock()
        while due <= now and due < end:
            lags.append(now - due)
            pick = len(lags) - 1 if ordered else rng.randrange(len(paths))
            task = asyncio.ensure_future(one(paths[pick % len(paths)], now))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, due - clock()))
    sent = len(lags)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=10.0)
        for task in pending:
            task.cancel()
        errors += len(pending)
    for _, (_, writer) in idle:
        writer.close()
    lat = np.asarray(latencies) * 1e3
    return {"rate": rate, "sent": sent, "achieved": sent / seconds, "errors": errors,
            "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
            "lag_p99_ms": float(np.percentile(np.asarray(lags) * 1e3, 99)),
            "connections": opened, "error_kinds": error_kinds}
