"""`make bench`: runs every benchmark module of this package (each has a `main()` that
measures hostsnap and its anchor in the same run and calls report.write_report).
`python -m bench NAME [OPTIONS]` runs one, passing it its options (fanout takes some)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench

NOT_BENCHMARKS = {
    "report",
    "bench_domain",
    "__main__",
    "fake_agent_fleet",
    "fanout_zone",
}
TAKES_OPTIONS = {"fanout"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in NOT_BENCHMARKS
    )
    if args:
        name, options = args[0], args[1:]
        if name not in names:
            print(f"bench: no benchmark {name!r}; there are {', '.join(names)}")
            return 2
        module = importlib.import_module(f"bench.{name}")
        if name in TAKES_OPTIONS:
            module.main(options)
        elif options:
            print(f"bench: {name} takes no options")
            return 2
        else:
            module.main()
        return 0
    if not names:
        print("bench: no benchmarks in this release yet")
        return 0
    for name in names:
        print(f"bench: running {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
