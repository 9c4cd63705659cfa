"""hostsnap-controller: coordinates the agents of a CloudStack zone."""

try:
    # pyproject.toml's version, written by setup.py into what it builds: the DEBs and the RPM
    # ship no distribution metadata for importlib.metadata to read.
    from controller._version import VERSION  # type: ignore[import-not-found]
except ImportError:  # a source checkout
    import tomllib
    from pathlib import Path

    _PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
    VERSION = str(tomllib.loads(_PYPROJECT.read_text())["project"]["version"])

__version__: str = VERSION
