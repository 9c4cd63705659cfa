"""What a domain's QEMU process has open, read from /proc.

libvirt reports no block node's read-only state, and QEMU before 9.0 leaves the base of an
aborted active commit opened read-write (fixed upstream by "mirror: restore base read-only
after an aborted active commit"). A later commit into such a base is not flushed when it
ends (QEMU flushes a base only when it reopens it read-only), so its data stays in QEMU's
metadata cache, unseen on disk, until something flushes the node."""

from __future__ import annotations

import os
from pathlib import Path

# Where the system libvirt daemon keeps each running domain's QEMU pid.
PID_DIR = Path("/run/libvirt/qemu")


def opened_read_write(domain: str, path: str, pid_dir: Path = PID_DIR) -> bool | None:
    """Whether the domain's QEMU has `path` open for writing; None when that cannot be told
    (no pid file: not the system daemon, or the domain is not running; /proc not readable)."""
    try:
        pid = int((pid_dir / f"{domain}.pid").read_text().strip())
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except (OSError, ValueError):
        return None
    wanted = os.path.realpath(path)
    for fd in fds:
        try:
            if os.readlink(fd) != wanted:
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except FileNotFoundError:
            continue  # closed meanwhile
        except OSError:
            return None  # e.g. no right to look into another user's process
        flags = next(int(line.split()[1], 8) for line in info.splitlines() if line[:6] == "flags:")
        if flags & os.O_ACCMODE != os.O_RDONLY:
            return True
    return False
