"""deploy/kubernetes and the Containerfile (issue 16, point 3), checked without a cluster or a
registry: the kustomize base rendered and every object validated against Kubernetes' own schemas
(``kubernetes-validate``, strict: an unknown field fails), every container argument a real flag of
the service it runs (``--help`` of that service), and the references between objects resolved.

Rendering: the base uses only ``resources:`` (checked here), for which kustomize's output is the
resource files' objects themselves, so the test reads them as kustomize would; no kubectl needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from helpers import REPO

from codecbench import rpc

BASE = REPO / "deploy" / "kubernetes"
# Pinned: a version of Kubernetes whose schemas kubernetes-validate ships, with the grpc probe
# (GA in 1.27), appArmorProfile (1.30) and hostUsers; raising it is a deliberate change.
KUBERNETES_VERSION = "1.32.0"
# The image each Deployment or StatefulSet runs, and the module of its service.
SERVICES = {"codecbench-orchestrator": "orchestrator_svc", "codecbench-worker": "worker_svc"}
# Flags that parallel work on issue 16 adds (Prometheus metrics on both services, the worker's
# graceful drain): the manifests use them already; once they land, --help lists them and this set
# can go.
FLAGS_BEING_ADDED = {"--metrics-port", "--metrics-host", "--drain-grace-s"}
FLAG = re.compile(r"^(--[a-z][a-z0-9-]*)(?:=(.*))?$")


def render() -> list[dict[str, Any]]:
    """The objects of the kustomize base, in the order of its ``resources:``."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, (
        "the base uses more of kustomize than resources: render it with kustomize then")
    objects = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((BASE / resource).read_text()) if doc]
    return objects


def workloads() -> list[dict[str, Any]]:
    return [o for o in render() if o["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def flag_values(container: dict[str, Any]) -> dict[str, str]:
    """``--flag=value`` arguments of a container (every argument must have that shape)."""
    values = {}
    for arg in container.get("args", []):
        match = FLAG.match(arg)
        assert match, f"{container['name']}: argument {arg!r} is not --flag or --flag=value"
        values[match.group(1)] = match.group(2) or ""
    return values


@cache
def cli_flags(module: str) -> frozenset[str]:
    """The long options ``python -m module --help`` lists."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                          check=True, cwd=REPO)
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", done.stdout))


def test_every_rendered_object_is_valid_for_the_pinned_kubernetes_version() -> None:
    assert KUBERNETES_VERSION in kubernetes_validate.utils.all_versions()
    objects = render()
    assert {o["kind"] for o in objects} >= {"Deployment", "StatefulSet", "Service", "Secret",
                                            "PersistentVolumeClaim"}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)  # raises on any error


def test_the_validation_would_catch_a_broken_manifest() -> None:
    """The check above is not vacuous: a misspelt field and a wrong type fail it."""
    worker = next(o for o in workloads() if o["kind"] == "StatefulSet")
    worker["spec"]["template"]["spec"]["containers"][0]["securityContext"]["procMonut"] = "Unmasked"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    orchestrator = next(o for o in workloads() if o["kind"] == "Deployment")
    orchestrator["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(orchestrator, KUBERNETES_VERSION, strict=True)


def test_every_container_argument_is_a_real_flag_of_its_service() -> None:
    seen = set()
    for workload in workloads():
        for container in containers(workload):
            module = SERVICES[container["image"]]
            seen.add(module)
            known = cli_flags(module)
            assert {"--host", "--port", "--tls-cert", "--health-port"} <= known  # --help was parsed
            unknown = set(flag_values(container)) - known - FLAGS_BEING_ADDED
            assert not unknown, f"{workload['metadata']['name']}: {sorted(unknown)} are not flags of {module}"
    assert seen == set(SERVICES.values())


def test_probes_metrics_paths_and_variables_agree_with_the_arguments() -> None:
    for workload in workloads():
        template = workload["spec"]["template"]
        for container in containers(workload):
            flags = flag_values(container)
            health_port = int(flags["--health-port"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == health_port, (container["name"], probe)
            # Readiness on the overall status (NOT_SERVING on a standby or while draining); liveness on
            # the service that stays SERVING while the process answers (test_standby checks both).
            assert "service" not in container["readinessProbe"]["grpc"]
            assert container["livenessProbe"]["grpc"]["service"] == rpc.LIVENESS_SERVICE
            assert template["metadata"]["annotations"]["prometheus.io/port"] == flags["--metrics-port"]
            assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
            mounts = [m["mountPath"] for m in container["volumeMounts"]]
            for flag, value in flags.items():
                if value.startswith("/"):  # every file or folder named lies on a volume
                    assert any(value.startswith(mount + "/") for mount in mounts), (flag, value)
                for variable in re.findall(r"\$\((\w+)\)", value):  # Kubernetes expands $(VAR) from env
                    assert variable in {e["name"] for e in container.get("env", [])}, (flag, variable)
            for flag in ("--tls-cert", "--tls-key", "--tls-ca", "--enroll-token-file"):
                assert flag in flags, (container["name"], flag)


def test_references_between_objects_resolve() -> None:
    objects = render()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for workload in workloads():
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names, volume
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names, volume
        for container in spec["containers"]:
            for env in container.get("env", []):
                if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == ref["name"])
                    assert ref["key"] in secret["stringData"], ref
    for service in (o for o in objects if o["kind"] == "Service"):
        assert any(service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
                   for w in workloads()), service["metadata"]["name"]
    worker = next(o for o in workloads() if o["kind"] == "StatefulSet")
    assert ("Service", worker["spec"]["serviceName"]) in names


def test_workers_ask_for_a_gpu_and_what_bubblewrap_needs() -> None:
    worker = next(o for o in workloads() if o["kind"] == "StatefulSet")
    spec = worker["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flag_values(container)["--device"] == "cuda"
    security = container["securityContext"]
    assert spec["hostUsers"] is False and security["procMount"] == "Unmasked"
    assert security["seccompProfile"]["type"] == "Unconfined" and security["appArmorProfile"]["type"] == "Unconfined"
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True and "privileged" not in security
    # Its address is the name its certificate holds: POD.SERVICE.NAMESPACE of its headless Service.
    assert flag_values(container)["--host"] == f"$(POD_NAME).{worker['spec']['serviceName']}.$(POD_NAMESPACE)"


def test_containerfile_builds_both_services_from_the_installed_packages() -> None:
    text = (REPO / "Containerfile").read_text()
    targets = re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE)
    assert {"orchestrator", "worker"} <= set(targets)
    pyproject = (REPO / "pyproject.toml").read_text()
    include = re.search(r"\[tool\.setuptools\.packages\.find\]\ninclude = \[(.*?)\]", pyproject)
    assert include
    packages = {name.strip(' "*') for name in include.group(1).split(",")}
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.MULTILINE))
    assert copied == packages, "the image must copy exactly the packages pyproject installs"
    entrypoints = re.findall(r'^ENTRYPOINT \["([\w-]+)"\]$', text, re.MULTILINE)
    assert set(entrypoints) == set(SERVICES)
    for script in entrypoints:
        assert re.search(rf"^{script} = ", pyproject, re.MULTILINE), script
    worker_stage = text.split("AS worker", 1)[1]
    assert "bubblewrap" in worker_stage and "libseccomp2" in worker_stage
    # The images the manifests name are the two targets.
    assert {c["image"] for w in workloads() for c in containers(w)} == set(SERVICES)


def test_readme_tells_how_to_build_and_deploy_and_that_ci_cannot_build() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploying a fleet", 1)[1].split("\n## ", 1)[0]
    for command in ("podman build --target worker", "podman build --target orchestrator", "kubectl apply -k",
                    "codecbench-orchestrator certs"):
        assert command in section, command
    assert "cannot be built in CI" in section


async def test_the_workers_one_certificate_covers_every_worker_name_the_manifests_give(tmp_path: Path) -> None:
    """The README's `certs` recipe: a wildcard for the headless Service's names, which gRPC's own
    hostname check accepts for POD.codecbench-worker.NAMESPACE (and nothing outside it)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from codecbench import certs, rpc

    certs.make_quickstart(tmp_path, ["codecbench-orchestrator", "*.codecbench-worker.codecbench"])
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = rpc.bind(server, "127.0.0.1", 0, rpc.TlsConfig(tmp_path / "worker.pem", tmp_path / "worker-key.pem",
                                                          tmp_path / "ca.pem"))
    await server.start()
    orchestrator = rpc.TlsConfig(tmp_path / "orchestrator.pem", tmp_path / "orchestrator-key.pem", tmp_path / "ca.pem")

    async def check(name: str) -> bool:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", orchestrator.channel_credentials(),
                                           options=[("grpc.ssl_target_name_override", name)]) as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            except grpc.aio.AioRpcError:
                return False
            return True

    try:
        assert await check("codecbench-worker-0.codecbench-worker.codecbench")
        assert await check("codecbench-worker-17.codecbench-worker.codecbench")
        assert not await check("codecbench-worker-0.codecbench-worker.elsewhere")
    finally:
        await server.stop(0)


def test_no_secret_reaches_a_command_line_the_database_url_comes_from_the_secrets_volume() -> None:
    [orchestrator_workload] = [w for w in workloads() if w["metadata"]["name"] == "codecbench-orchestrator"]
    [container] = containers(orchestrator_workload)
    flags = flag_values(container)
    assert not {"--database-url", "--store-url"} & set(flags)
    assert not any("$(" in arg for arg in container["args"])  # no Secret expanded into an argument
    url_file = Path(flags["--database-url-file"])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(url_file.parent)]
    [volume] = [v for v in orchestrator_workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    name = volume["secret"]["secretName"]
    [secret] = [o for o in render() if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    assert secret["stringData"][url_file.name].startswith("postgresql+psycopg://")


def test_the_orchestrator_reads_its_database_url_from_a_file_or_the_environment(tmp_path: Path) -> None:
    from orchestrator_svc.__main__ import DATABASE_URL_ENV, parse_args, token_main

    url = f"sqlite:///{tmp_path / 'store.db'}"
    url_file = tmp_path / "url"
    url_file.write_text(url + "\n")  # a Secret's file may end in a newline
    assert parse_args(["--database-url-file", str(url_file)]).store_url == url
    with pytest.MonkeyPatch.context() as env:
        env.setenv(DATABASE_URL_ENV, url)
        assert parse_args([]).store_url == url
        assert parse_args(["--database-url", "sqlite:///other.db"]).store_url == "sqlite:///other.db"
    with pytest.raises(SystemExit):  # one source at a time
        parse_args(["--database-url", url, "--database-url-file", str(url_file)])
    with pytest.raises(SystemExit):
        parse_args(["--database-url-file", str(tmp_path / "missing")])
    # token create really uses the file's store (the database file appears where the URL says).
    assert token_main(["create", "alice", "--database-url-file", str(url_file), "--data-dir", str(tmp_path / "d")]) == 0
    assert (tmp_path / "store.db").exists()


def test_the_service_logs_the_database_url_without_its_password() -> None:
    # Every place that shows a store's URL renders it with the password hidden.
    shown = [line for path in (REPO / "orchestrator_svc").glob("*.py") for line in path.read_text().splitlines()
             if "engine.url" in line]
    assert shown and all("hide_password=True" in line for line in shown)


def test_network_policies_admit_prometheus_to_metrics_and_workers_to_grpc_only() -> None:
    policies = {o["metadata"]["name"]: o for o in render() if o["kind"] == "NetworkPolicy"}
    for workload in workloads():
        name = workload["metadata"]["name"]
        policy = policies[name]  # every workload has its policy
        assert policy["spec"]["podSelector"]["matchLabels"] == workload["spec"]["selector"]["matchLabels"]
        [container] = containers(workload)
        ports = {p["name"] for p in container["ports"]}
        by_port = {}
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in ports, (name, port)  # names a port the container has
                by_port[port["port"]] = rule.get("from")
        assert by_port.keys() == ports
        assert [peer["podSelector"]["matchLabels"] for peer in by_port["metrics"]] == [
            {"app.kubernetes.io/name": "prometheus"}]
        grpc_from = [peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for peer in by_port["grpc"]]
        assert grpc_from and "prometheus" not in str(by_port["grpc"])
        assert set(grpc_from) <= {"worker", "orchestrator", None}  # None: the labelled clients


def test_the_readme_overlay_finds_every_file_the_readme_commands_make(tmp_path: Path) -> None:
    # kustomize reads a secretGenerator's files relative to the overlay's folder and refuses any
    # outside it: the README's commands must make them inside my-fleet/.
    section = (REPO / "README.md").read_text().split("## Deploying a fleet", 1)[1]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    [commands] = [b for b in blocks if "mkdir my-fleet" in b]
    [overlay] = [yaml.safe_load(b) for b in blocks if b.startswith("apiVersion: kustomize")]
    bin_dir = Path(sys.executable).parent
    for line in commands.strip().splitlines():
        line = line.replace("codecbench-orchestrator certs", f"{bin_dir}/codecbench-orchestrator certs")
        line = re.sub(r"^python ", f"{sys.executable} ", line)
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    named = [entry.rpartition("=")[2]
             for generator in overlay["secretGenerator"] for entry in generator.get("files", [])]
    assert named and all((tmp_path / "my-fleet" / name).is_file() for name in named), named
    assert overlay["resources"] == ["../codecbench/deploy/kubernetes"]
