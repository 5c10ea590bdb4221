"""The Kubernetes manifests (deploy/kubernetes/), checked by a parser (not deployed): the same
hardened Triton flags as the embedded server, probes on the ports the server listens on, a
liveness check that sends real requests, a headless Service for client-side balancing."""

from pathlib import Path

import pytest

from posescore.engine.serving.server import (ADMIN_HEADER, ADMIN_PROTOCOLS, FRONT_APIS, FRONT_HEADER, TritonServer,
                                             repository_models, DEFAULT_MODEL_REPOSITORY)

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def manifests():
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "posescore.yaml").read_text())}


def _flags(args):
    return {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else None) for a in args}


def test_the_container_runs_triton_with_the_embedded_servers_hardening(manifests, tmp_path):
    container = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["tritonserver"]
    flags = _flags(container["args"])
    server = TritonServer()
    server._runtime_dir, server._shm_prefix = tmp_path, "x_"  # command() without starting it
    embedded = _flags(server.command())
    for flag in ("--allow-http", "--exit-on-error", "--strict-readiness", "--model-control-mode", "--allow-metrics"):
        assert flags[flag] == embedded[flag], flag
    assert [a for a in container["args"] if a.startswith("--metrics-config")] == \
        [a for a in server.command() if a.startswith("--metrics-config")]  # latency summaries
    restricted = dict(a.split("=", 1)[1].split(":", 1) for a in container["args"]
                      if a.startswith("--grpc-restricted-protocol="))
    assert restricted == {ADMIN_PROTOCOLS: f"{ADMIN_HEADER}=$(POSESCORE_ADMIN_KEY)",
                          FRONT_APIS: f"{FRONT_HEADER}=$(POSESCORE_FRONT_KEY)"}
    secret = manifests["Secret"]
    env = {e["name"]: e for e in container["env"]}
    for name, key in (("POSESCORE_ADMIN_KEY", "key"), ("POSESCORE_FRONT_KEY", "front-key")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": key}
        assert key in secret["stringData"]
    assert flags["--model-repository"] == "/posescore/model_repository"
    assert flags["--load-model"] == "*" and len(repository_models(DEFAULT_MODEL_REPOSITORY)) == 6
    # Triton's gRPC on the pod's loopback only; the front's container holds the pod's gRPC port.
    assert flags["--grpc-address"] == "127.0.0.1"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": int(flags["--metrics-port"])}


def test_the_front_holds_the_pods_grpc_port_and_reaches_triton_with_its_key(manifests):
    """The sidecar is `posescore front`, parsed by the CLI's own parser, pointed at Triton's
    loopback port, with the key Triton's restricted protocols ask for."""
    from posescore.cli import build_parser

    containers = {c["name"]: c for c in manifests["Deployment"]["spec"]["template"]["spec"]["containers"]}
    triton, front = containers["triton"], containers["front"]
    flags = _flags(triton["args"])
    assert front["command"][:2] == ["posescore", "front"]
    args = build_parser().parse_args(front["command"][1:])
    assert args.backend == f"127.0.0.1:{flags['--grpc-port']}" and args.model_repository == flags["--model-repository"]
    assert args.listen == "0.0.0.0:8001" and front["ports"] == [{"name": "grpc", "containerPort": 8001}]
    env = {e["name"]: e for e in front["env"]}
    assert env[args.key_env] == {e["name"]: e for e in triton["env"]}["POSESCORE_FRONT_KEY"]


def test_probes_ask_the_right_ports_and_liveness_sends_real_requests(manifests):
    spec = manifests["Deployment"]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    containers = spec["template"]["spec"]["containers"]
    grpc_port = next(p["containerPort"] for c in containers for p in c["ports"] if p["name"] == "grpc")
    assert container["readinessProbe"]["grpc"]["port"] == grpc_port  # Triton's grpc.health.v1 service
    assert container["startupProbe"]["grpc"]["port"] == grpc_port
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["posescore", "probe"] and command[command.index("--url") + 1] == f"127.0.0.1:{grpc_port}"
    # A probe round may take its timeout per model: the kubelet waits for all of them.
    per_model = float(command[command.index("--timeout") + 1])
    assert container["livenessProbe"]["timeoutSeconds"] >= 4 * per_model
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8002"
    assert spec["replicas"] >= 2


def test_the_service_is_headless_and_selects_the_pods(manifests):
    service, deployment = manifests["Service"], manifests["Deployment"]
    assert service["spec"]["clusterIP"] == "None"  # DNS answers every pod: clients balance per request
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_the_image_has_the_python_posescore_needs():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = next(line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM "))
    assert base == "nvcr.io/nvidia/tritonserver:24.12-py3"  # the first with Python >= 3.11 (pyproject's)
    for folder in ("kernels", "engine", "clients", "model_repository"):
        assert f"COPY {folder} {folder}" in dockerfile
    pyproject = (DEPLOY.parent.parent / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in pyproject  # 24.12 ships Python 3.12
