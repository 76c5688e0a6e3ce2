"""Every relative link of the docs, and every `docs/x.md#anchor` the code names, leads somewhere: the file
exists and has a heading with that anchor (GitHub's slugs)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [p for folder in ("include", "dags", "deploy", "devstack", "bench") for p in (ROOT / folder).rglob("*.py")]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
BARE = re.compile(r"(?<![\w(/.-])((?:\.\./|docs/)?[\w-]+\.md)#([\w-]+)")


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", re.sub(r"<[^>]+>", "", heading).strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M):
        s = slug(heading)
        found.add(f"{s}-{seen[s]}" if s in seen else s)  # a repeated heading gets -1, -2, ...
        seen[s] = seen.get(s, 0) + 1
    return found


def targets(path: Path, root: Path = ROOT) -> list[tuple[str, list[Path]]]:
    """(link, candidate files) of one file: markdown links outside code, bare `x.md#anchor` anywhere."""
    raw = path.read_text()
    found = []
    if path.suffix == ".md":
        found += [(t, [path.parent / t.partition("#")[0]]) for t in LINK.findall(FENCE.sub("", raw))
                  if not re.match(r"[a-z]+:", t)]
    found += [(f"{f}#{a}", [path.parent / f, root / f]) for f, a in BARE.findall(raw)]
    return found


def broken(path: Path, root: Path = ROOT) -> list[str]:
    out = []
    for target, candidates in targets(path, root):
        file_part, _, anchor = target.partition("#")
        dest = next((c for c in candidates if c.exists()), None) if file_part else path
        if dest is None:
            out.append(f"{path.relative_to(root)}: no file {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{path.relative_to(root)}: no heading #{anchor} in {dest.relative_to(root)}")
    return out


def test_every_link_of_the_docs_and_the_code_resolves():
    assert sum(len(targets(p)) for p in DOCS) > 50  # the check sees the links
    assert [problem for p in DOCS + CODE for problem in broken(p)] == []


def test_a_broken_anchor_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Two words\n\n## Two words\n\n"
                                   "[ok](#two-words-1) [bad](#three-words) [gone](b.md)\n")
    assert broken(tmp_path / "a.md", tmp_path) == ["a.md: no heading #three-words in a.md", "a.md: no file b.md"]
