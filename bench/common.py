"""Helpers shared by bench/load.py and bench/scale.py: the machine's description, markdown
tables, a section of docs/BENCHMARKS.md between markers, the `socialrec` command."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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
    """How the benchmark was run, for its docs section: `bench/TOOL` and its arguments."""
    return " ".join([f"bench/{tool}", *map(shlex.quote, argv or sys.argv[1:])])


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
