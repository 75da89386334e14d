"""Generates the Python code of the ``codecbench.v1`` protocol from ``protos/``.

``python -m codecbench.protogen`` (``make proto``) rewrites ``codecbench/v1/*_pb2*.py[i]``;
:func:`generate` into another directory lets a test check that the committed code is current.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "codecbench" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Runs protoc (from grpcio-tools) with the Python, gRPC and .pyi generators.

    Args:
        out_dir: root under which ``codecbench/v1/`` files are written.

    Raises:
        RuntimeError: protoc reported an error (its message is on stderr).
    """
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {PROTO_FILES}")


def generated_files(root: Path) -> dict[str, bytes]:
    """Maps each generated file under ``root/codecbench/v1`` to its content."""
    gen_dir = root / "codecbench" / "v1"
    return {p.name: p.read_bytes() for p in sorted(gen_dir.glob("*_pb2*.py*"))}


if __name__ == "__main__":
    generate(REPO_ROOT)
    print("\n".join(generated_files(REPO_ROOT)), file=sys.stderr)
