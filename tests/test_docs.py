"""The manual: the configuration reference says what the schema accepts, and every link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daemon.config_reference import COMMAND, REFERENCE, main, render

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_configuration_reference_matches_the_schema():
    assert REFERENCE.read_text() == render(), f"docs/configuration.md is stale; run `{COMMAND}`"


def test_reference_check_fails_on_a_stale_page_and_passes_on_a_fresh_one(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(render() + "an edit by hand\n")
    assert main(["--check", "--out", str(page)]) == 1
    assert main(["--out", str(page)]) == 0
    assert main(["--check", "--out", str(page)]) == 0


def test_every_key_of_the_shipped_config_is_in_the_reference():
    documented = re.findall(r"^\| `([^`]+)` \|", REFERENCE.read_text(), re.MULTILINE)
    # `sites.<name>.mm_per_pixel` stands for any site's name
    patterns = [re.compile(re.escape(k).replace(re.escape("<name>"), r"[^.]+")) for k in documented]

    def missing(key: str, value: object) -> list[str]:
        if any(p.fullmatch(key) for p in patterns):
            return []
        if isinstance(value, dict):
            if not value:  # an empty section, e.g. `sites: {}`: its keys must be documented
                return [] if any(k.startswith(f"{key}.") for k in documented) else [key]
            return [m for k, v in value.items() for m in missing(f"{key}.{k}", v)]
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return [m for item in value for k, v in item.items() for m in missing(f"{key}[].{k}", v)]
        return [key]

    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert [m for k, v in shipped.items() for m in missing(k, v)] == []


def _outside_code(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (a `# comment` in a bash block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(page: Path) -> set[str]:
    """GitHub's ids of the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    for line in _outside_code(page.read_text()):
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            if n:
                seen[f"{slug}-{n}"] = 1
    return set(seen)


def _broken_links(page: Path) -> list[str]:
    broken = []
    for line in _outside_code(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check offline
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{target} (no such heading)")
    return broken


def test_readme_links_only_to_files_that_exist():
    assert _broken_links(REPO / "README.md") == []


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_links_in_docs_lead_to_files_and_headings_that_exist(page):
    assert _broken_links(page) == []


def test_readme_links_every_page_of_the_manual():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall((REPO / "README.md").read_text())}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []
