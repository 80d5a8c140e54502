"""Print the README's configuration table from `Settings`, so the docs cannot drift from the
code (a test compares them)."""

from __future__ import annotations

import json

from app.config import Settings


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else json.dumps(default, default=str).strip('"')
        rows.append(f"| `SOCIALREC_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
