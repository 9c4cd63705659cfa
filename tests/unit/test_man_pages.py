"""The man pages are made from the programs' argparse parsers (packaging/man/generate.py, run
when the packages are built): every command, at every depth, and every option and argument of
every parser is in the page, under that command; tests/packaging checks the packages ship
them."""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

MAN = Path(__file__).resolve().parents[2] / "packaging" / "man"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("man_generate", MAN / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    written = generator().generate(tmp_path_factory.mktemp("man"))
    return {path.stem: plain(path.read_text()) for path in written}


def plain(roff: str) -> str:
    """The page's text without roff's escapes for dashes and fonts."""
    return re.sub(r"\\f[BIR]|\\[,/]", "", roff).replace("\\-", "-")


def commands(
    parser: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def by_command(page: str, program: str) -> dict[str, str]:
    """The page cut at each command's `.SH OPTIONS 'PROGRAM COMMAND'`; the program's own
    options are those before the first."""
    parts = re.split(r"^\.SH OPTIONS '([^']+)'$", page, flags=re.M)
    return {program: parts[0], **dict(zip(parts[1::2], parts[2::2], strict=True))}


def expected(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices
        elif action.option_strings:
            yield from action.option_strings
        else:
            yield str(action.metavar or action.dest)


PROGRAMS = [(program, module, function) for program, module, function, _ in generator().PAGES]


@pytest.mark.parametrize(("program", "module", "function"), PROGRAMS)
def test_every_command_and_option_of_the_parser_is_in_its_page(
    pages: dict[str, str], program: str, module: str, function: str
):
    parser = generator().parser_of(module, function)
    sections = by_command(pages[program], program)

    for path, command in commands(parser, program):
        assert path in sections, f"{program}(8) has no section for {path}"
        missing = [word for word in expected(command) if word not in sections[path]]
        assert missing == [], f"{path}: not in {program}(8): {missing}"


def test_the_pages_have_what_the_hand_written_ones_missed(pages: dict[str, str]):
    cli = by_command(pages["hostsnap"], "hostsnap")

    assert {"hostsnap consolidate", "hostsnap flatten", "hostsnap snapshot create"} <= set(cli)
    assert "--defer-merge" in cli["hostsnap delete"]
    assert "--force" in cli["hostsnap flatten"]
    assert "--drain" in pages["hostsnap-agent"]
    assert pages["hostsnap"].startswith('.TH HOSTSNAP 8 "')


def test_no_hand_written_page_is_left_to_drift():
    assert sorted(p.name for p in MAN.glob("*.8")) == []
