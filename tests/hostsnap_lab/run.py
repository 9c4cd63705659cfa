"""Runs outside commands: one place that builds the error when a command fails."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

log = logging.getLogger(__name__)


class LabError(RuntimeError):
    """The lab could not do what it was asked; the message says what and why."""


def run(
    argv: Sequence[str], *, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs argv and returns its output; a non-zero exit raises LabError with stderr."""
    log.debug("running %s", " ".join(argv))
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout,
            text=True,
            check=False,
        )
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]} is not installed: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from e
    if check and result.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result
