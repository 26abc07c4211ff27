"""The README sends readers only to documents that ship with the project."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN_NAME = re.compile(r"[A-Za-z0-9_./-]*\.md\b")


def test_every_document_the_readme_names_exists():
    named = set(MARKDOWN_NAME.findall((ROOT / "README.md").read_text()))
    shipped = {
        str(path.relative_to(ROOT)) for path in ROOT.rglob("*.md") if ".venv" not in path.parts
    }
    names = {path.rsplit("/", 1)[-1] for path in shipped}
    missing = {name for name in named if name not in shipped and name not in names}
    assert not missing, f"README.md points to documents that are not in the project: {missing}"
