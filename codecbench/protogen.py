"""Generates the Python code of the ``codecbench.v1`` protocol from ``protos/``.

``python -m codecbench.protogen`` (``make proto``) rewrites ``codecbench/v1/*_pb2*.py[i]``;
:func:`generate` into another directory lets a test check that the committed code is current.

The ``.pyi`` stubs come from mypy-protobuf (``protoc-gen-mypy``, ``protoc-gen-mypy_grpc``), not from
protoc's own ``--pyi_out``: only mypy-protobuf types enum values as ``Enum.ValueType`` (so mypy tells a
``Phase`` from an ``ExperimentState``) and types the gRPC stubs and servicer bases (``*_pb2_grpc.pyi``).
Its output depends on its version, which ``pyproject.toml`` pins next to grpcio-tools.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "codecbench" / "v1").glob("*.proto"))


def _plugin(name: str) -> str:
    """Path of a protoc plugin script installed next to this interpreter (or on ``PATH``).

    Raises:
        RuntimeError: the plugin is not installed (``pip install -e '.[dev]'`` installs mypy-protobuf's).
    """
    # Next to sys.executable first: `make proto` runs .venv/bin/python without .venv/bin on PATH.
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"protoc plugin {name} not found: install the dev extras (mypy-protobuf)")
    return found


def generate(out_dir: Path) -> None:
    """Runs protoc (from grpcio-tools) with the Python and gRPC generators and mypy-protobuf's stubs.

    Args:
        out_dir: root under which ``codecbench/v1/`` files are written.

    Raises:
        RuntimeError: protoc reported an error (its message is on stderr), or a plugin is missing.
    """
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
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
