"""Every relative link in README.md and docs/ (history included) reaches an existing file and, with ``#anchor``,
a heading of that page as GitHub names it: a renamed key or moved section must not leave a dead link behind
(a helper's rename of ``teacher.batch`` once did)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_FENCED = re.compile(r"```.*?```", re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCED.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.MULTILINE)}


def broken_links(pages: list[Path]) -> list[str]:
    broken = []
    for page in pages:
        for match in _LINK.finditer(_FENCED.sub("", page.read_text(encoding="utf-8"))):
            url = match.group(1)
            if re.match(r"[a-z]+:", url):  # https:, mailto:
                continue
            path, _, fragment = url.partition("#")
            target = (page.parent / path).resolve() if path else page
            where = page.relative_to(REPO) if page.is_relative_to(REPO) else page
            if not target.exists():
                broken.append(f"{where}: {url}: no such file")
            elif fragment and target.suffix == ".md" and fragment not in anchors(target):
                broken.append(f"{where}: {url}: no such heading")
    return broken


def test_slug_follows_github() -> None:
    batch_api = "half-price-the-batch-api-teacherbatch_api-true"
    assert slug("Half price: the Batch API (`teacher.batch_api: true`)") == batch_api
    assert slug("The 150-call benchmark: 3 arms x 3 seeds") == "the-150-call-benchmark-3-arms-x-3-seeds"


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    assert len(pages) > 10
    assert not broken_links(pages), "\n".join(broken_links(pages))


def test_a_dead_link_and_a_dead_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n## Some part\n[ok](#some-part) [gone](b.md) [no](a.md#other)\n")
    assert broken_links([tmp_path / "a.md"]) == [
        f"{tmp_path / 'a.md'}: b.md: no such file",
        f"{tmp_path / 'a.md'}: a.md#other: no such heading",
    ]
