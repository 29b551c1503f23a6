"""The documentation holds together: every relative link of the Markdown pages reaches an existing
file (and heading, for ``#anchor``), every ``docs/<page>.md#anchor`` cited in the code exists,
nothing cites the design notes that are not in the repository, and the README stays short."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "deploy/serving/README.md", "benchmarks/RESULTS.md"] + sorted(
    f"docs/{name}" for name in os.listdir(os.path.join(REPO, "docs")) if name.endswith(".md")
)
CODE_ROOTS = ("ppdet_dac", "tools", "deploy", "configs", "tests")
CODE_EXTENSIONS = (".py", ".yml", ".yaml", ".cc", ".cu", ".h", ".cuh")
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_REF = re.compile(r"docs/[A-Za-z0-9_./-]+\.md(?:#[A-Za-z0-9_-]+)?")
# citations of the design notes kept outside the repository ("spec §4.2", "quirk #8 of the spec")
_OUTSIDE_NOTES = re.compile(
    r"spec\s*§|§\s*\d|\bspec\s+\d+\.\d|quirk\s*#?\s*\d|\bof the spec\b|dac_spec"
)


def _text_lines(text):
    """The lines of a Markdown text outside fenced code blocks, with their 1-based numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def github_slug(heading):
    """GitHub's anchor for a heading: the rendered text, lower case, without punctuation other
    than '-' and '_', spaces as '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found, seen = set(), {}
    for _, line in _text_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_target(source, target):
    """Why ``target`` (a link in file ``source``, relative to it) does not resolve, or None."""
    path, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(os.path.dirname(source), path)) if path else source
    if not os.path.exists(resolved):
        return f"{target}: no file {os.path.relpath(resolved, REPO)}"
    if anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
        return f"{target}: no heading with anchor #{anchor} in {os.path.relpath(resolved, REPO)}"
    return None


def broken_links(path):
    """'file:line: target: why' for every relative link of a Markdown file that does not resolve."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    problems = []
    for number, line in _text_lines(text):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            why = broken_target(path, target)
            if why:
                problems.append(f"{os.path.relpath(path, REPO)}:{number}: {why}")
    return problems


def _code_files():
    for root in CODE_ROOTS:
        for folder, dirs, files in os.walk(os.path.join(REPO, root)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
            for name in files:
                if name.endswith(CODE_EXTENSIONS):
                    yield os.path.join(folder, name)


def test_every_relative_link_of_the_pages_resolves():
    problems = [p for page in PAGES for p in broken_links(os.path.join(REPO, page))]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_reference_in_the_code_resolves():
    problems, cited = [], 0
    for path in _code_files():
        if path == os.path.abspath(__file__):
            continue
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for ref in _CODE_REF.findall(line):
                    cited += 1
                    why = broken_target(os.path.join(REPO, "x"), ref)
                    if why:
                        problems.append(f"{os.path.relpath(path, REPO)}:{number}: {why}")
    assert not problems, "docs references that do not resolve:\n" + "\n".join(problems)
    assert cited > 0, "no docs/...md reference found in the code: the scan found no files"


def test_no_citation_of_notes_outside_the_repository():
    places = []
    for path in list(_code_files()) + [os.path.join(REPO, page) for page in PAGES]:
        if path == os.path.abspath(__file__):
            continue
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if _OUTSIDE_NOTES.search(line):
                    places.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
    assert not places, (
        "cite a docs/ page (e.g. docs/algorithm.md#...) instead of the design "
        "notes, which are not in the repository:\n" + "\n".join(places)
    )


def test_readme_is_short_and_starts_with_the_two_commands():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move details to docs/"
    )
    head = "\n".join(lines[:5])
    assert "make demo" in head and "make test" in head


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    """The checks above would pass vacuously if the link parser or the slug rule were wrong."""
    (tmp_path / "other.md").write_text(
        "# Title\n## Kernel check on a GPU: `make gpu-check`\n"
        "## ppdet's VOC metric\n## Step\n## Step\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#kernel-check-on-a-gpu-make-gpu-check) [ok](other.md#step-1)\n"
        "[ok](other.md#ppdets-voc-metric) ![img](other.md) [web](https://x.org/a)\n"
        "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n"
        "[bad file](missing.md) [bad anchor](other.md#no-such-heading)\n"
    )
    problems = broken_links(str(page))
    assert len(problems) == 2, problems
    assert "no file" in problems[0] and "missing.md" in problems[0]
    assert "#no-such-heading" in problems[1]
