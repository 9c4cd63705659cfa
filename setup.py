"""Generates the gRPC stubs (proto/generate_stubs.py) whenever the package is built, and writes
pyproject.toml's version into what is built (agent/_version.py, controller/_version.py): the
DEBs and the RPM ship no distribution metadata that importlib.metadata could read."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

GENERATOR = Path(__file__).resolve().parent / "proto" / "generate_stubs.py"


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        runpy.run_path(str(GENERATOR))["generate_stubs"]()
        super().run()
        for package in ("agent", "controller"):
            written = Path(self.build_lib) / package / "_version.py"
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_text(
                f'"""Written by setup.py."""\n\nVERSION = "{self.distribution.get_version()}"\n'
            )


setup(cmdclass={"build_py": BuildPyWithStubs})
