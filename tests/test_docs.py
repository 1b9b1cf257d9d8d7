"""Every command has help with an example and is listed in the README."""

import re

import click
import pytest

from rollout.cli import cli
from rollout.cli._base import COMMANDS

from .conftest import REPO


def all_commands(group: click.Group = cli, prefix: str = "rollout") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # loads each lazily registered command
        command = group.get_command(ctx, name)
        assert command is not None, f"{prefix} {name} is listed but cannot be loaded"
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += all_commands(command, path)
        else:
            found.append((path, command))
    return found


@pytest.mark.parametrize(("path", "command"), all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    """Each command explains itself and shows an example invocation."""
    assert command.help and "Example" in command.help, f"{path} lacks help with an example"
    assert command.get_short_help_str(limit=200)


def test_readme_lists_every_command_with_its_summary() -> None:
    """The README's command table matches the commands and their one-line help."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- commands -->")[1].split("<!-- /commands -->")[0]
    documented = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", table, flags=re.M))
    actual = {path: command.get_short_help_str(limit=200) for path, command in all_commands()}
    assert sorted(documented) == sorted(actual)
    for path, summary in actual.items():
        assert documented[path] == summary, f"README summary of {path} differs from --help"


def test_command_table_gives_each_command_its_own_summary() -> None:
    """`rollout --help` lists commands from a table without loading them: each entry names its command and summary."""
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name, (_, summary) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=200) == summary, f"update the summary of {name} in rollout/cli/_base.py"


def test_cli_reference_is_generated_from_the_current_help() -> None:
    """docs/cli.md is exactly what `python -m rollout.cli.reference` writes from today's --help."""
    from rollout.cli import reference

    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == reference.render(), "docs/cli.md is out of date: run python -m rollout.cli.reference"
    for path, _command in all_commands():
        assert f"## `{path}`" in page, f"{path} is missing from docs/cli.md"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces become hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def _anchors(page: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page, flags=re.M | re.S)  # headings inside code blocks are none
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


DOC_PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.name)
def test_doc_links_lead_to_a_page_and_a_heading(page) -> None:  # type: ignore[no-untyped-def]
    """Every relative link in the README and docs/ names a file that exists, and a heading in it."""
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an outside address
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(linked.read_text(encoding="utf-8")), (
                f"{page.name}: no heading #{anchor} in {file}"
            )


def test_readme_is_a_front_page_linking_every_docs_page() -> None:
    """The README stays short and links each page of docs/."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    for page in (REPO / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"the README does not link docs/{page.name}"


RULE_ID = re.compile(r"(?<![\w.])(R[1-4]|A[1-4]|N[1-4]|P1?\d)(?![\w.])")
CITATION = re.compile(r"§(\d+(?:\.\d+)?)")


def _cited_in_code() -> tuple[set[str], set[str]]:
    """Rule IDs and § sections cited in the comments and docstrings of rollout/ and tests/."""
    ids: set[str] = set()
    sections: set[str] = set()
    for source in [*(REPO / "rollout").rglob("*.py"), *(REPO / "tests").rglob("*.py")]:
        if source.name == "test_docs.py":
            continue  # this file names the IDs and the old reference to look for them
        text = source.read_text(encoding="utf-8")
        ids |= set(RULE_ID.findall(text))
        sections |= set(CITATION.findall(text))
        assert "log-formats.md" not in text, f"{source.name} cites log-formats.md, which is not in the repository"
    return ids, sections


def test_every_detection_rule_the_code_cites_is_in_docs_detection() -> None:
    """R1–R4, P1–P19, A1–A4, N1–N4 and §-sections cited in the code are defined in docs/detection.md."""
    page = (REPO / "docs" / "detection.md").read_text(encoding="utf-8")
    ids, sections = _cited_in_code()
    assert {"R1", "R4", "P1", "P18"} <= ids  # the scan below must find the citations at all
    defined = set(re.findall(r"\*\*(R[1-4]|A[1-4]|N[1-4])\*\*", page)) | set(
        re.findall(r"^\| (P\d+) \|", page, flags=re.M)
    )
    assert sorted(ids - defined) == [], "cited in the code but not defined in docs/detection.md"
    headings = set(re.findall(r"^#+ §(\d+(?:\.\d+)?) ", page, flags=re.M))
    for section in sections:
        assert section in headings or section.split(".")[0] in headings, (
            f"§{section} is no heading of docs/detection.md"
        )
