"""The build id covers exactly the code that decides a result: worker, sandbox, protocol, kernel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO
from helpers.services import free_port, orchestrator

from codecbench import build, rpc
from codecbench.client import Client
from codecbench.v1 import orchestrator_pb2, orchestrator_pb2_grpc, worker_pb2


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


def test_build_id_changes_with_a_result_library_version_and_not_with_the_cuda_label() -> None:
    installed = build.library_versions()
    assert set(installed) == set(build.RESULT_LIBRARIES)
    assert installed["torch"] != build.ABSENT and "+" not in installed["torch"]  # the wheel's +cpu label is dropped
    assert build.compute_build_id(REPO, installed) == build.build_id()
    for name in build.RESULT_LIBRARIES:
        upgraded = {**installed, name: installed[name] + ".post1"}
        assert build.compute_build_id(REPO, upgraded) != build.build_id(), name
    assert build.compute_build_id(REPO, {**installed, "Pillow": build.ABSENT}) != build.build_id()


async def test_a_worker_with_another_pillow_is_stale_and_gets_no_work(tmp_path: Path) -> None:
    # The worker reports the build id of its own libraries; one computed with another Pillow is
    # what an upgraded worker would report: the orchestrator lists it STALE, naming both builds.
    upgraded = build.compute_build_id(REPO, {**build.library_versions(), "Pillow": "99.0.0"})
    async with orchestrator(tmp_path / "orch") as orch, Client(orch.address) as client, \
            rpc.channel(orch.address, orch.enroll_secret) as enroll:
        info = worker_pb2.WorkerInfo(worker_id="w-new-pillow", build_id=upgraded, slots=1,
                                     address=f"127.0.0.1:{free_port()}", protocol_version=build.PROTOCOL_VERSION)
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(enroll)
        await stub.RegisterWorker(orchestrator_pb2.RegisterWorkerRequest(worker=info))
        workers = {w.info.worker_id: w for w in await client.workers()}
        assert workers["w-new-pillow"].state == orchestrator_pb2.WORKER_STATE_STALE
        assert upgraded in workers["w-new-pillow"].state_reason
        assert build.build_id() in workers["w-new-pillow"].state_reason
