"""Whether the host's clock is synchronised, as chrony, systemd-timesyncd or ntp say."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

PROBES = (
    ["chronyc", "-n", "tracking"],
    ["timedatectl", "show", "-p", "NTPSynchronized"],
    ["ntpq", "-p"],
)
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class TimeSync:
    tool: str  # the program that answered
    synchronised: bool


def _synchronised(returncode: int, text: str) -> bool:
    return returncode == 0 and (
        "Leap status     : Normal" in text or "NTPSynchronized=yes" in text or "*" in text
    )


def probe() -> TimeSync | None:
    """The first installed tool's answer (one that does not answer within its timeout is
    passed over); None when none is installed or none answered."""
    for argv in PROBES:
        if shutil.which(argv[0]) is None:
            continue
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        return TimeSync(argv[0], _synchronised(out.returncode, out.stdout))
    return None
