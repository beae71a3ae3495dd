"""The documentation's own links: every picture and file a Markdown page of the repository points to is there (a
report's figures renamed or moved leave no page pointing at nothing)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "runs", "out", "node_modules", "build", "dist"}


def _pages():
    for p in ROOT.rglob("*.md"):
        rel = p.relative_to(ROOT)
        if not (set(rel.parts[:-1]) & SKIP) and not any(part.startswith(".") for part in rel.parts[:-1]):
            yield p


def test_every_local_link_of_the_markdown_pages_exists():
    pages = list(_pages())
    assert any(p.name == "README.md" and p.parent == ROOT for p in pages)
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if not path or re.match(r"[a-z]+:", path):      # an anchor, a web address
                continue
            if not (page.parent / path).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing
