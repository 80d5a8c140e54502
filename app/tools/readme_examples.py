"""The README's example requests, replayed against the demo model, so the answers it shows are
real output: `python -m app.tools.readme_examples` rewrites them in place (after the demo model
changed), and tests/docs checks them.

Between `<!-- examples:begin -->` and `<!-- examples:end -->`, every ```console block is a
session: a line starting with `$ ` is a command (continued over the next lines while its quotes
are open), the lines up to the next command are what it printed. Commands are `curl` requests
to http://127.0.0.1:8000 (`-X`, `-H`, `-d`, `| grep -E PATTERN`); `$ # the same request again`
repeats the previous request; `export …` and `make …` lines are setup and print nothing. The
requests run in README order against a fresh app on the demo model, with its demo users loaded
under a key prefix of its own in Redis (`SOCIALREC_REDIS_URL`, else a redis-server started for
the run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from app.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
DEMO = Path(__file__).resolve().parents[2] / "model_artifacts" / "demo"
BEGIN, END = "<!-- examples:begin -->", "<!-- examples:end -->"
BASE = "http://127.0.0.1:8000"
ADMIN_TOKEN_VARIABLE = "$SOCIALREC_ADMIN_TOKEN"
CATALOG_TOKEN_VARIABLE = "$SOCIALREC_CATALOG_TOKEN"
WIDTH = 100  # README output lines are wrapped for reading near this width
SETUP = ("export", "make")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: str | None
    grep: str | None  # `| grep -E PATTERN`: keep the matching lines of a text answer


@dataclass
class Example:
    """One `$ ` command of the README and the lines shown as its output."""

    command: list[str]  # the README lines of the command, as written
    output: list[str]
    request: Request | None  # None: a setup step that prints nothing


def examples(readme: str) -> list[Example]:
    """Every command in the examples section, in order."""
    found: list[Example] = []
    for block in _console_blocks(_section(readme)):
        found += _parse_block(block)
    return found


def _section(readme: str) -> str:
    start, end = readme.index(BEGIN), readme.index(END)
    return readme[start:end]


def _console_blocks(text: str) -> Iterator[list[str]]:
    for match in re.finditer(r"^```console\n(.*?)^```$", text, flags=re.M | re.S):
        yield match.group(1).rstrip("\n").split("\n")


def _parse_block(lines: list[str]) -> list[Example]:
    out: list[Example] = []
    n = 0
    previous: Request | None = None
    while n < len(lines):
        if not lines[n].startswith("$ "):
            raise ValueError(f"README example: output without a command: {lines[n]!r}")
        command = [lines[n]]
        n += 1
        while not _complete(command) and n < len(lines):
            command.append(lines[n])
            n += 1
        output = []
        while n < len(lines) and not lines[n].startswith("$ "):
            output.append(lines[n])
            n += 1
        request = _request(command, previous)
        previous = request or previous
        out.append(Example(command, output, request))
    return out


def _complete(command: list[str]) -> bool:
    text = "\n".join(command)[2:]
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on
        return False
    return True


def _request(command: list[str], previous: Request | None) -> Request | None:
    text = "\n".join(command)[2:].replace("\\\n", " ")
    if text.strip() == "# the same request again":
        if previous is None:
            raise ValueError("README example: 'the same request again' with nothing before")
        return previous
    words = shlex.split(text, comments=True)
    if not words or words[0] in SETUP:
        return None
    grep = None
    if "|" in words:
        at = words.index("|")
        if words[at + 1: at + 3] != ["grep", "-E"] or len(words) != at + 4:
            raise ValueError(f"README example: only `| grep -E PATTERN` is replayed: {text!r}")
        grep, words = words[at + 3], words[:at]
    if words[0] != "curl":
        raise ValueError(f"README example: not a curl request: {text!r}")
    method, headers, body, url = "GET", [], None, None
    args = iter(words[1:])
    for arg in args:
        if arg == "-s":
            continue
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(":")
            headers.append((name.strip(), value.strip()))
        elif arg == "-d":
            body = next(args)
            method = "POST" if method == "GET" else method
        elif arg.startswith(BASE):
            url = arg
        else:
            raise ValueError(f"README example: curl option {arg!r} is not replayed")
    if url is None:
        raise ValueError(f"README example: no {BASE} URL in {text!r}")
    return Request(method, url[len(BASE):], tuple(headers), body, grep)


# ------------------------------------------------------------------ answers


async def replay(client: httpx.AsyncClient, requests: list[Request | None],
                 admin_token: str, catalog_token: str) -> list[str | None]:
    """Each request's answer body as text, in order (None for setup steps)."""
    answers: list[str | None] = []
    for request in requests:
        if request is None:
            answers.append(None)
            continue
        headers = {k: v.replace(ADMIN_TOKEN_VARIABLE, admin_token)
                   .replace(CATALOG_TOKEN_VARIABLE, catalog_token)
                   for k, v in request.headers}
        response = await client.request(request.method, request.path, headers=headers,
                                        content=request.body)
        text = response.text
        if request.grep is not None:
            pattern = re.compile(request.grep)
            text = "\n".join(line for line in text.splitlines() if pattern.search(line))
        answers.append(text)
    return answers


def parse_output(lines: list[str]) -> Any:
    """What the README shows, as data: JSON (however it is wrapped), else the text lines."""
    text = "\n".join(lines)
    try:
        return json.loads(text)
    except ValueError:
        return lines


def render(answer: str) -> list[str]:
    """An answer as README lines: JSON compact and wrapped for reading, text as it came."""
    try:
        value = json.loads(answer)
    except ValueError:
        return answer.splitlines()
    if not isinstance(value, dict):
        return [_compact(value)]
    return _wrap_object(value)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _wrap_object(value: dict[str, Any]) -> list[str]:
    """`{"a":1,"b":2,` … greedily up to WIDTH per line; a list of objects too long for one line
    (a list's `items`, a user's `history`) gets one object per line, and an item's non-empty
    `reasons` a line of their own."""
    lines = ["{"]
    pairs = list(value.items())
    for n, (key, item) in enumerate(pairs):
        last = n == len(pairs) - 1
        tail = "}" if last else ","
        if _one_per_line(key, item):
            lines = _append(lines, f'"{key}":[', new_line=len(lines[-1]) > 1)
            indent = " " * len(lines[-1])
            rows = [_item_lines(x, indent) for x in item]
            for r, row in enumerate(rows):
                end = "]" + tail if r == len(rows) - 1 else ","
                row[-1] += end
                if r == 0:
                    lines[-1] += row[0].lstrip()
                    lines += row[1:]
                else:
                    lines += row
            continue
        lines = _append(lines, f'"{key}":{_compact(item)}{tail}')
    return lines


def _one_per_line(key: str, value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
            and len(f'"{key}":') + len(_compact(value)) + 2 > WIDTH)


def _append(lines: list[str], piece: str, new_line: bool = False) -> list[str]:
    if new_line or (len(lines[-1]) > 1 and len(lines[-1]) + len(piece) > WIDTH):
        lines.append(" " + piece)
    else:
        lines[-1] += piece
    return lines


def _item_lines(item: Any, indent: str) -> list[str]:
    if not isinstance(item, dict) or not item.get("reasons"):
        return [indent + _compact(item)]
    head = {k: v for k, v in item.items() if k != "reasons"}
    first = indent + _compact(head)[:-1] + ","
    return [first, indent + ' "reasons":' + _compact(item["reasons"]) + "}"]


def rewrite(readme: str, answers: list[str | None]) -> str:
    """The README with every example's output replaced by `answers` (commands untouched)."""
    found = examples(readme)
    if len(found) != len(answers):
        raise ValueError("answers do not match the README's examples")
    section = _section(readme)
    blocks = list(re.finditer(r"^```console\n(.*?)^```$", section, flags=re.M | re.S))
    shown = iter(zip(found, answers, strict=True))
    pieces, last = [], 0
    for block in blocks:
        lines: list[str] = []
        for _ in _parse_block(block.group(1).rstrip("\n").split("\n")):
            example, answer = next(shown)
            lines += example.command
            lines += [] if answer is None else render(answer)
        pieces += [section[last:block.start(1)], "\n".join(lines) + "\n"]
        last = block.end(1)
    pieces.append(section[last:])
    start = readme.index(BEGIN)
    return readme[:start] + "".join(pieces) + readme[start + len(section):]


# ------------------------------------------------------------------ the demo service


@asynccontextmanager
async def demo_client(redis_url: str, key_prefix: str, admin_token: str,
                      catalog_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the demo model, its demo users loaded under `key_prefix`, as `make run`
    serves it (in-process; the lifespan runs as in a server)."""
    from asgi_lifespan import LifespanManager

    from app.main import create_app
    from app.offline.load import load_into_redis

    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, artifacts=DEMO,
                        admin_token=admin_token, catalog_token=catalog_token)
    load_into_redis(DEMO, DEMO / "data", settings=settings, progress=False)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


def delete_prefix(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@contextmanager
def some_redis() -> Iterator[str]:
    from app.tools.local_redis import LocalRedis, answers

    url = os.environ.get("SOCIALREC_REDIS_URL", "redis://127.0.0.1:6379/0")
    if answers(url):
        yield url
        return
    with tempfile.TemporaryDirectory() as folder, LocalRedis(Path(folder)) as server:
        yield server.url


async def _regenerate(readme: Path) -> bool:
    text = readme.read_text(encoding="utf-8")
    requests = [e.request for e in examples(text)]
    prefix, token, catalog = f"readme-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex, \
        uuid.uuid4().hex
    with some_redis() as url:
        # The README shows the defaults, as `make run` serves them: no setting of the caller's
        # shell may change an answer.
        for name in [n for n in os.environ if n.startswith("SOCIALREC_")]:
            del os.environ[name]
        try:
            async with demo_client(url, prefix, token, catalog) as client:
                answers = await replay(client, requests, token, catalog)
        finally:
            delete_prefix(url, prefix)
    fresh = rewrite(text, answers)
    if fresh != text:
        readme.write_text(fresh, encoding="utf-8")
    return fresh != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    changed = asyncio.run(_regenerate(args.readme))
    print(f"{args.readme}: examples {'rewritten' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
