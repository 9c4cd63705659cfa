"""Writes the man pages hostsnap-agent(8), hostsnap(8) and hostsnap-controller(8) from the
programs' own argparse parsers, with Debian's python3-argparse-manpage (its module is
build_manpages), so that no command or option is missing from them. What no parser holds
(configuration, files, exit status, examples, see also) is appended from <program>.sections
next to this file. The packages run it at build time with the code they built first on
sys.path, so the pages are those of the code they ship:

    python3 packaging/man/generate.py OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# program, module, parser function, NAME line.
PAGES = (
    ("hostsnap-agent", "agent.main", "build_parser", "the snapshot service of a KVM host"),
    ("hostsnap", "agent.cli", "build_parser", "snapshots of this host's KVM guests"),
    (
        "hostsnap-controller",
        "controller.main",
        "_parser",
        "coordinates the hostsnap agents of a CloudStack zone",
    ),
)


def parser_of(module: str, function: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = getattr(importlib.import_module(module), function)()
    return parser


def release_date() -> str:
    # dpkg-buildpackage and rpmbuild set SOURCE_DATE_EPOCH (the changelog's date): the same
    # tree makes the same pages.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else None
    return (when or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d")


def page(program: str, parser: argparse.ArgumentParser, name: str, version: str) -> str:
    from build_manpages.manpage import Manpage

    parser.man_short_description = name  # type: ignore[attr-defined]
    generated = str(Manpage(parser))
    # argparse-manpage 1.2 heads every page as section 1 of a manual called "Manual".
    _, body = generated.split("\n", 1)
    header = (
        f'.TH {program.upper()} 8 "{release_date()}" "hostsnap {version}" "System Administration"'
    )
    return f"{header}\n{body}{(HERE / f'{program}.sections').read_text()}"


def generate(out: Path) -> list[Path]:
    # The usage lines wrap at the terminal's width otherwise.
    os.environ["COLUMNS"] = "80"
    from agent import __version__

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for program, module, function, name in PAGES:
        path = out / f"{program}.8"
        path.write_text(page(program, parser_of(module, function), name, __version__))
        written.append(path)
    return written


if __name__ == "__main__":
    for written in generate(Path(sys.argv[1])):
        print(written)
