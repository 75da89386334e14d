"""The build id covers exactly the code that decides a result: worker, sandbox, protocol, kernel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

from codecbench import build


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for package in ("codecbench", "worker_svc", "sandbox", "orchestrator_svc"):
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_build_id_changes_with_result_code_and_not_with_user_facing_code(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    before = build.compute_build_id(root)
    assert before == build.build_id()

    for user_facing in ("codecbench/cli/commands.py", "codecbench/client.py", "codecbench/analysis.py",
                        "orchestrator_svc/scheduler.py"):
        with (root / user_facing).open("a") as f:
            f.write("\n# an edit that cannot change a result\n")
        assert build.compute_build_id(root) == before, user_facing

    for deciding in ("worker_svc/metrics.py", "sandbox/child.py", "codecbench/values.py", "codecbench/v1/types_pb2.py"):
        edited = _copy_tree(tmp_path / deciding.replace("/", "_"))
        with (edited / deciding).open("a") as f:
            f.write("\n# an edit that may change a result\n")
        assert build.compute_build_id(edited) != before, deciding


def test_build_id_names_every_kernel_module_the_worker_and_sandbox_import() -> None:
    # In a fresh interpreter: which codecbench modules do the worker and the sandbox child load?
    probe = (
        "import sys, worker_svc.server, worker_svc.__main__, sandbox.child, sandbox.template\n"
        "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.startswith('codecbench') and getattr(m, '__file__', None))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    covered = {p.resolve() for p in build.result_files(REPO)}
    for file in loaded.stdout.split():
        path = Path(file).resolve()
        if path.name == "__init__.py" and path.parent == REPO / "codecbench":
            continue  # the package's lazy re-export of Client decides nothing
        assert path in covered, f"{path.relative_to(REPO)} is imported by the worker but not in build.RESULT_MODULES"
    for module in build.RESULT_MODULES:
        assert (REPO / module).is_file(), module
