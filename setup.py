"""Generates the gRPC stubs (proto/generate_stubs.py) whenever the package is built."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

GENERATOR = Path(__file__).resolve().parent / "proto" / "generate_stubs.py"


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        runpy.run_path(str(GENERATOR))["generate_stubs"]()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
