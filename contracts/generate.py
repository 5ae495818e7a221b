"""Generate the Python code for the contracts with grpcio-tools (`make proto`).

Output: `<name>_pb2.py` (messages), `<name>_pb2_grpc.py` (services) and their `.pyi`
type stubs (by mypy-protobuf) next to each `.proto` file, importable as `contracts.v1`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path(__file__).resolve().parent / "v1"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write the generated modules under `out_dir` (the repository root for the real ones)."""
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(ROOT)) for p in proto_files()),
    ]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    generate(ROOT)
    print(f"generated {len(proto_files())} contracts into {PROTO_DIR.relative_to(ROOT)}")
