"""Generates the Python gRPC stubs of every .proto under proto/.

Works with PyPI's grpcio-tools and with Debian's python3-grpc-tools: both provide
``grpc_tools.protoc``. setup.py calls it on every build; the output is never committed.

    python3 proto/generate_stubs.py [OUTPUT_DIR]    (default: next to the .proto files)
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def generate_stubs(out_dir: Path = PROTO_ROOT) -> None:
    from grpc_tools import protoc  # imported late: only building needs it

    well_known = Path(protoc.__file__).parent / "_proto"
    for proto in sorted(PROTO_ROOT.rglob("*.proto")):
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {proto}")
        # Type stubs for mypy. Debian's python3-grpc-tools has no pyi generator; the code
        # runs without them.
        protoc.main([*args[:3], f"--pyi_out={out_dir}", args[-1]])


if __name__ == "__main__":
    generate_stubs(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
