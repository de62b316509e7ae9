"""The README and docs/ state only commands, options, presets, scales, notebooks, paths and links that exist."""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from pgolf.research.scales import SCALES
from pgolf.running.bench import LOOP
from pgolf.running.cli import build_parser
from pgolf.running.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAIN_JOB = ('python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && '
            'pip install -e ".[dev]" && pgolf quickstart')
PRESET_TAKERS = {"train", "size", "config", "bench", "presets", "submit"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _code(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return inline + [line for block in fenced for line in block.splitlines()]


def _commands(text: str) -> list[list[str]]:
    """Every `pgolf ...` invocation in code, as words, up to a shell operator or a placeholder list."""
    out = []
    for span in _code(text):
        for m in re.finditer(r"(?:^|[\s(&|;])pgolf\s+([a-z][^|;&#)]*)", span):
            try:
                words = shlex.split(m.group(1).replace("\\|", "|"))
            except ValueError:
                words = m.group(1).split()
            cut = next((i for i, w in enumerate(words) if w.endswith(":")), None)
            if cut is not None:  # quoted output, e.g. "pgolf data fetch: error: ...": the command is its prefix
                words = words[:cut] + [words[cut][:-1]]
            out.append(words)
    return out


def test_readme_is_a_front_page_with_both_commands_on_the_first_screen():
    data = README.read_bytes()
    assert len(data) < 10_000, f"README.md is {len(data):,} bytes"
    first = data.decode().splitlines()[:40]
    assert MAIN_JOB in first, "the set-up + main job command is not in the README's first 40 lines"
    assert "pytest" in first, "the test command is not in the README's first 40 lines"
    assert "bits per byte" in data.decode() and "Lower is better" in data.decode()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_pgolf_command_and_option_exists(page):
    top = _subparsers(build_parser())
    checked = 0
    for words in _commands(page.read_text()):
        name = words[0]
        assert name in top, f"{page.name}: `pgolf {' '.join(words)}`: no sub-command {name!r}"
        parser = top[name]
        rest = words[1:]
        nested = _subparsers(parser)
        if nested and rest and not rest[0].startswith("-"):
            assert rest[0] in nested, f"{page.name}: `pgolf {name} {rest[0]}` does not exist"
            parser, rest = nested[rest[0]], rest[1:]
        known = {s for a in parser._actions for s in a.option_strings}
        for word in rest:
            option = word.split("=")[0]
            if option.startswith("--"):
                assert option in known, f"{page.name}: `pgolf {' '.join(words)}`: no option {option}"
        if name == "bench" and rest[:1] == [LOOP]:  # `pgolf bench loop`: the research-loop bench, not a preset
            rest = rest[1:]
        if name in PRESET_TAKERS and rest and rest[0].isidentifier() and not rest[0].isupper():  # not a placeholder
            assert rest[0] in PRESETS, f"{page.name}: `pgolf {' '.join(words)}`: no preset {rest[0]!r}"
        checked += 1
    if page == README:
        assert checked >= 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_named_preset_scale_notebook_and_path_exists(page):
    text = page.read_text()
    for span in _code(text):
        for word in re.findall(r"\b(pr\d+_[a-z0-9_]+)", span):
            assert word in PRESETS, f"{page.name}: preset {word!r} does not exist"
        if span in {"8xh100", "1xh100", "1xh100-short", "micro", "small", "regime"}:
            assert span in SCALES, f"{page.name}: scale {span!r} does not exist"
        if re.fullmatch(r"\d\d_[a-z0-9_]+", span):
            assert (REPO / "notebooks" / f"{span}.py").is_file(), f"{page.name}: notebook {span!r} does not exist"
        for path in re.findall(r"(?:^|\s)((?:pgolf|tests|notebooks|docs|figures|\.ci)/[\w./*-]*[\w*])", span):
            path = path.split(":")[0]
            if "toy" in path:  # the worked example of docs/adding-a-technique.md, made by following it
                continue
            found = list(REPO.glob(path)) if "*" in path else [REPO / path] if (REPO / path).exists() else []
            found = found or list(REPO.glob(path + "_*"))  # `notebooks/01`: a notebook's number
            assert found, f"{page.name}: `{path}` does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link {target!r} does not resolve"
        if anchor and file.suffix == ".md":
            headings = [re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                        for h in re.findall(r"^#+\s+(.*)$", file.read_text(), re.M)]
            assert anchor in headings, f"{page.name}: link {target!r}: no heading #{anchor} in {file.name}"


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"
