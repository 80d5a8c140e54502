"""The README's configuration table is generated from Settings; this keeps them in step."""

from __future__ import annotations

from pathlib import Path

from app.tools.settings_doc import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting_as_the_code_defines_it() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- settings:begin -->") + len("<!-- settings:begin -->")
    end = text.index("<!-- settings:end -->")
    assert text[start:end].strip() == settings_table(), (
        "README configuration table is stale: run `python -m app.tools.settings_doc`")
