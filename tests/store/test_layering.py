"""The store is the bottom layer: it knows Redis and nothing else of the application, so the
serving path, the API and the offline commands can all build on it."""

from __future__ import annotations

import ast
from pathlib import Path

import app.store

STORE = Path(app.store.__file__).parent


def test_the_store_imports_nothing_else_from_the_application() -> None:
    outside = []
    for path in sorted(STORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            outside += [f"{path.name}: {n}" for n in names
                        if n.split(".")[0] == "app" and not n.startswith("app.store")]
    assert not outside
