"""`make bench`: runs every benchmark module of this package (each has a `main()` that
measures hostsnap and its anchor in the same run and calls report.write_report)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

NOT_BENCHMARKS = {"report", "bench_domain", "__main__"}


def main() -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in NOT_BENCHMARKS
    )
    if not names:
        print("bench: no benchmarks in this release yet")
        return 0
    for name in names:
        print(f"bench: running {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
