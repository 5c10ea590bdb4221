"""The model repository's configs, the embedded server's life cycle, and bad requests over gRPC."""

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from posescore.engine.serving.server import (DEFAULT_MODEL_REPOSITORY, SHM_DIR, SHM_PREFIX, TritonServer,
                                             repository_models)

MODELS = repository_models(DEFAULT_MODEL_REPOSITORY)
_INPUT_CALL = re.compile(r'(?:input_array|poses_input|input_scalar)\(\s*request,\s*"(\w+)"')
_OUTPUT_CALL = re.compile(r'output_tensor\(\s*"(\w+)"')


def parse_config(name):
    return text_format.Parse((DEFAULT_MODEL_REPOSITORY / name / "config.pbtxt").read_text(),
                             model_config_pb2.ModelConfig())


def test_repository_has_the_six_models():
    assert MODELS == ["dtw", "landmarks", "live", "pose", "score", "search"]


@pytest.mark.parametrize("name", MODELS)
def test_config_parses_and_matches_model_py(name):
    config = parse_config(name)
    assert config.name == name and config.backend == "python"
    source = (DEFAULT_MODEL_REPOSITORY / name / "1" / "model.py").read_text()
    read = set(_INPUT_CALL.findall(source)) | ({"frames"} if "frames_input(request" in source else set())
    assert {i.name for i in config.input} == read
    assert {o.name for o in config.output} == set(_OUTPUT_CALL.findall(source))


def _server_processes(pgid):
    """PIDs still alive in the server's process group."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout
    return [int(pid) for pid, group in (line.split() for line in out.splitlines()) if int(group) == pgid]


def test_server_stops_with_its_python_stubs():
    server = TritonServer(models=["score"]).start()
    pgid = server.process.pid
    assert len(_server_processes(pgid)) >= 2  # tritonserver and the score model's python stub
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("score") and not client.is_model_ready("dtw")
    server.stop()
    assert _server_processes(pgid) == [] and not server.is_running()
    server.stop()  # idempotent


def test_crashed_server_leaves_no_shared_memory_behind():
    server = TritonServer(models=["score"]).start()
    prefix = server._shm_prefix
    assert list(SHM_DIR.glob(prefix + "*"))  # the python backend's regions, under this server's prefix
    server.process.send_signal(signal.SIGKILL)  # a crash: the server cleans nothing up
    server.process.wait()
    assert list(SHM_DIR.glob(prefix + "*"))
    server.stop()
    assert not list(SHM_DIR.glob(prefix + "*"))


def test_server_started_from_a_short_lived_thread_keeps_running():
    """The parent-death signal is bound to the forking thread; servers are forked from a
    long-lived launcher thread, so a worker thread's end does not stop its server."""
    import threading

    started = []
    worker = threading.Thread(target=lambda: started.append(TritonServer(models=["score"]).start()))
    worker.start()
    worker.join()
    server = started[0]
    try:
        time.sleep(1.0)
        assert server.is_running()
        assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("score")
    finally:
        server.stop()


def test_killed_parent_leaves_no_orphan_server(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from posescore.engine.serving.server import TritonServer
        server = TritonServer(models=["score"]).start()
        print(server.process.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pgid = int(parent.stdout.readline())
    assert _server_processes(pgid)
    parent.send_signal(signal.SIGKILL)  # no chance to clean up: the server must go by itself
    parent.wait()
    deadline = time.monotonic() + 40
    while _server_processes(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _server_processes(pgid) == []
    assert not list(SHM_DIR.glob(f"{SHM_PREFIX}{parent.pid}_*"))  # SIGTERM: it removed its shared memory


def test_a_port_in_use_is_a_clear_error_and_serve_exits_1(triton_server):
    """A port another process listens on, a plain socket or another posescore server: the start
    fails at once naming the port, and ``posescore serve`` exits 1 (it claimed success before,
    seeing the other server's models ready)."""
    from posescore.engine.serving.server import ServerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"the gRPC port 127.0.0.1:{port} is in use by another process"):
            TritonServer(grpc_port=port, models=["score"]).start()
        with pytest.raises(ServerError, match=f"the metrics port 127.0.0.1:{port} is in use"):
            TritonServer(metrics_port=port, models=["score"]).start()
    exe = Path(sys.executable).with_name("posescore")
    out = subprocess.run([str(exe), "serve", "--grpc-port", str(triton_server.grpc_port)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert f"the gRPC port {triton_server.grpc_url} is in use by another process" in out.stderr


def test_serve_prints_addresses_and_stops_on_sigterm():
    exe = Path(sys.executable).with_name("posescore")
    proc = subprocess.Popen([str(exe), "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = dict(proc.stdout.readline().split(None, 1) for _ in range(3))
    assert set(lines) == {"gRPC", "metrics", "log"}  # HTTP is off unless --http
    grpc_url = lines["gRPC"].strip()
    assert grpc_url.startswith("127.0.0.1:")
    client = grpcclient.InferenceServerClient(grpc_url)
    assert all(client.is_model_ready(name) for name in MODELS)
    import urllib.request

    metrics = urllib.request.urlopen(lines["metrics"].strip(), timeout=10).read().decode()
    assert "nv_inference_request_success" in metrics
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    with pytest.raises(InferenceServerException):
        client.is_server_live()


# -- bad requests: each gets a clear error, and the server keeps serving ------------------------

def _input(name, array, datatype=None):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype or _datatype(array))
    tensor.set_data_from_numpy(array)
    return tensor


def _datatype(array):
    return {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.uint8): "UINT8",
            np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL", np.dtype(np.object_): "BYTES"}[array.dtype]


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    poses = rng.uniform(0, 400, (n, 17, 3)).astype(np.float32)
    poses[..., 2] = 0.9
    return poses


def _bad_requests(archive_root):
    poses = _poses(4)
    nan = poses.copy()
    nan[1, 3, 0] = np.nan
    return [
        ("score", [_input("query", poses[:1].astype(np.float64)), _input("candidates", poses[None])], "FP64"),
        ("score", [_input("query", poses[:1]), _input("candidates", poses[None, :, :, :2].copy())], "shape"),
        ("score", [_input("query", poses[0]), _input("candidates", poses)], "batch size"),  # no batch dimension
        ("score", [_input("query", poses[:1]), _input("candidates", poses[None, :0])], "at least 1"),
        ("score", [_input("query", poses[:1]), _input("candidates", nan[None])], "NaN"),
        ("score", [_input("query", poses[:1]), _input("candidates", poses[None]),
                   _input("metric", np.array([[b"manhattan"]], np.object_))], "manhattan"),
        ("score", [_input("query", np.zeros((1, 17, 3), np.float32)), _input("candidates", poses[None])],
         "query: poses: no pose can be normalized"),
        ("dtw", [_input("reference", poses), _input("attempt", nan)], "NaN"),
        ("pose", [_input("frames", np.zeros((1, 0, 0, 3), np.uint8))], "0x0"),
        ("pose", [_input("frames", np.zeros((1, 8, 8, 4), np.uint8))], "shape"),
        ("search", [_input("archive", np.array([b"../elsewhere"], np.object_)), _input("query", poses[:1])],
         "outside"),
        ("search", [_input("archive", np.array([b"missing"], np.object_)), _input("query", poses[:1])],
         "not a posescore archive"),
        ("search", [_input("archive", np.array([b"a" * 5000], np.object_)), _input("query", poses[:1])],
         "archive: a name of 5,000 characters"),
        ("search", [_input("archive", np.array([b"x/" + b"b" * 300], np.object_)), _input("query", poses[:1])],
         "255 per folder"),
    ]


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(triton_server, archive_root):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    for model, inputs, expected in _bad_requests(archive_root):
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, inputs)
        assert expected in err.value.message(), (model, err.value.message())
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", (model, err.value.message())
    poses = _poses(4)
    good = client.infer("score", [_input("query", poses[:1]), _input("candidates", poses[None])])
    assert good.as_numpy("scores")[0, 0] == pytest.approx(100.0, abs=1e-3)


def test_concurrent_bad_requests_do_not_fail_the_good_ones(triton_server):
    """Concurrent requests, which the score model batches, some bad: each bad one gets its own
    error naming the problem (NaN: found when the request is parsed; no candidate that can be
    normalized: found when its batch is scored), the good ones their answers."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    poses = _poses(6, seed=1)
    bad = poses.copy()
    bad[0, 0, 0] = np.inf
    results = {}

    def done(n):
        return lambda result, error: results.__setitem__(n, (result, error))

    blind = poses.copy()
    blind[..., 2] = 0.0
    for n in range(24):
        candidates = bad if n % 3 == 0 else blind if n % 4 == 1 else poses
        client.async_infer("score", [_input("query", poses[n % 6][None]), _input("candidates", candidates[None])],
                           callback=done(n))
    deadline = time.monotonic() + 60
    while len(results) < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    for n, (result, error) in sorted(results.items()):
        if n % 3 == 0:
            assert error is not None and "NaN or infinite" in error.message()
        elif n % 4 == 1:
            assert error is not None and "candidates: poses: no pose can be normalized" in error.message()
        else:
            assert error is None and result.as_numpy("scores")[0, n % 6] == pytest.approx(100.0, abs=1e-3)
    assert len(results) == 24


def test_a_huge_dtw_request_is_refused_before_any_work_and_small_ones_are_answered(triton_server):
    """Two 20,000-frame movements with mirror (8e8 cells): refused when parsed, naming the bound
    (it used to run for minutes, holding the model); small requests beside it are answered."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    huge = np.repeat(_poses(1), 20_000, axis=0)
    results = {}
    mirror = grpcclient.InferInput("mirror", [1], "BOOL")
    mirror.set_data_from_numpy(np.array([True]))
    client.async_infer("dtw", [_input("reference", huge), _input("attempt", huge), mirror],
                       callback=lambda result, error: results.__setitem__("huge", error))
    small = _poses(30, seed=2)
    for n in range(6):
        client.async_infer("dtw", [_input("reference", small), _input("attempt", small[::-1].copy())],
                           callback=lambda result, error, n=n: results.__setitem__(n, (result, error)),
                           client_timeout=30)
    deadline = time.monotonic() + 60
    while len(results) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert results["huge"] is not None and results["huge"].status() == "StatusCode.INVALID_ARGUMENT"
    assert "800,000,000 DTW cells, over this server's bound of 64,000,000" in results["huge"].message()
    for n in range(6):
        result, error = results[n]
        assert error is None and 0 <= result.as_numpy("score")[0] <= 100


def test_admin_surfaces_need_the_servers_key_and_http_is_off(triton_server):
    """A client could register the python backend's own shared-memory region and have Triton write
    into it, or change the logging: those calls now need the key only the server object holds."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    calls = [lambda **h: client.register_system_shared_memory("stub", "/posescore_triton_x", 64, headers=h or None),
             lambda **h: client.update_log_settings({"log_verbose_level": 1}, headers=h or None),
             lambda **h: client.get_model_repository_index(headers=h or None)]
    for call in calls:
        with pytest.raises(InferenceServerException) as err:
            call()
        assert "restricted" in err.value.message().lower() or "unavailable" in str(err.value.status()).lower(), \
            err.value.message()
    assert client.get_log_settings(headers=triton_server.admin_headers) is not None
    assert client.is_model_ready("score")  # health and inference stay open
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", triton_server.http_port), timeout=2).close()


def _shm_bytes(server):
    return sum(region.stat().st_size for region in SHM_DIR.glob(server._shm_prefix + "*"))


def test_a_request_over_its_models_bound_never_reaches_triton(triton_server):
    """Triton 2.51 takes gRPC messages up to 2 GB: a score request of 1,010,000 candidates (206 MB)
    was received whole and copied into the python backend's shared memory, which grew for it and
    stayed grown, before max_candidates refused it. The gRPC front refuses it from the model's
    max_request_bytes, a message over every model's bound from its length prefix, a live stream's
    oversized message by ending the stream; Triton's shared memory stays as it was, the server
    serves on, and Triton's own port answers no client without the front's key."""
    import urllib.request

    from posescore.engine.serving.grpc_front import request_bounds

    bounds = request_bounds(DEFAULT_MODEL_REPOSITORY, MODELS)
    # Each bound holds the model's largest request its own limits allow.
    assert bounds["score"] >= int(parse_config("score").parameters["max_candidates"].string_value) * 17 * 3 * 4
    client = grpcclient.InferenceServerClient(triton_server.grpc_url, channel_args=[
        ("grpc.max_send_message_length", -1)])
    shm_before = _shm_bytes(triton_server)
    query = _poses(1)
    for count, needle in ((1_010_000, r"a request to model 'score' of 206,04\d,\d{3} bytes is over the model's "
                                      r"bound of 205,048,576 bytes \(max_request_bytes"),
                          (1_400_000, r"Received message larger than max \(285,?600,?\d+")):
        candidates = np.broadcast_to(query, (1, count, 17, 3)).astype(np.float32)
        with pytest.raises(InferenceServerException) as err:
            client.infer("score", [_input("query", query), _input("candidates", candidates)])
        del candidates
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED", err.value.message()
        assert re.search(needle, err.value.message()), err.value.message()
    # A live stream's START with a 4.3 MB reference (over live's 4 MiB): the stream ends naming it.
    errors = []
    client.start_stream(callback=lambda result, error: errors.append(error))
    reference = np.ones((1, 21_000, 17, 3), np.float32)
    inputs = [_input("pose", reference[:, :1]), grpcclient.InferInput("time", [1, 1], "FP64"),
              _input("reference", reference)]
    inputs[1].set_data_from_numpy(np.zeros((1, 1)))
    client.async_stream_infer("live", inputs, sequence_id=77, sequence_start=True)
    client.stop_stream()
    assert errors and errors[0] is not None and "model 'live'" in errors[0].message(), errors
    assert _shm_bytes(triton_server) == shm_before
    poses = _poses(4)
    good = client.infer("score", [_input("query", poses[:1]), _input("candidates", poses[None])])
    assert good.as_numpy("scores")[0, 0] == pytest.approx(100.0, abs=1e-3)
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as page:
        metrics = page.read().decode()
    assert 'posescore_front_refused_total{front="grpc",model="score",reason="too_large"} 1' in metrics
    assert 'posescore_front_refused_total{front="grpc",model="live",reason="too_large"} 1' in metrics
    direct = grpcclient.InferenceServerClient(f"127.0.0.1:{triton_server._backend_grpc_port}")
    for call in (lambda: direct.is_server_ready(), lambda: direct.infer("score", [
            _input("query", poses[:1]), _input("candidates", poses[None])])):
        with pytest.raises(InferenceServerException, match="restricted"):
            call()


def test_posescore_front_bounds_a_triton_started_by_other_means(triton_server):
    """`posescore front` (the Kubernetes pod's sidecar) before a running tritonserver: answers
    through it, gRPC's health service too (the pod's probes), a dtw request over its bound
    refused; without the key it exits 1 naming the variable."""
    from posescore.engine.serving.server import free_port

    exe = str(Path(sys.executable).with_name("posescore"))
    backend = f"127.0.0.1:{triton_server._backend_grpc_port}"
    missing = subprocess.run([exe, "front", "--listen", "127.0.0.1:1", "--backend", backend],
                             capture_output=True, text=True, timeout=60, env={"PATH": ""})
    assert missing.returncode == 1 and "set POSESCORE_FRONT_KEY" in missing.stderr, missing.stderr
    port = free_port()
    env = {**__import__("os").environ, "POSESCORE_FRONT_KEY": triton_server.front_key}
    front = subprocess.Popen([exe, "front", "--listen", f"127.0.0.1:{port}", "--backend", backend],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert front.stdout.readline().startswith(f"gRPC     127.0.0.1:{port} -> {backend}; bounds: dtw 67,108,864")
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        poses = _poses(4)
        good = client.infer("score", [_input("query", poses[:1]), _input("candidates", poses[None])])
        assert good.as_numpy("scores")[0, 0] == pytest.approx(100.0, abs=1e-3)
        with pytest.raises(InferenceServerException) as err:
            client.infer("dtw", [_input("reference", poses[:1]),
                                 _input("attempt", np.repeat(poses[:1], 330_000, axis=0))])
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED" and "model 'dtw'" in err.value.message()
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # grpc.health.v1.Health/Check, empty service
            answer = channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
        assert answer == b"\x08\x01"  # HealthCheckResponse{status: SERVING}
    finally:
        front.terminate()
        assert front.wait(20) == 0


def test_a_killed_serve_leaves_a_runtime_folder_the_next_server_removes():
    """SIGKILL cannot be caught: the folder (backends, log) of a killed `posescore serve` stays
    until the next server starts and finds its owner gone."""
    exe = Path(sys.executable).with_name("posescore")
    proc = subprocess.Popen([str(exe), "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = dict(proc.stdout.readline().split(None, 1) for _ in range(3))
    runtime = Path(lines["log"].strip()).parent
    assert runtime.is_dir()
    proc.kill()
    proc.wait()
    assert runtime.is_dir()  # left behind
    with TritonServer(models=["score"]):
        assert not runtime.exists()


def test_the_score_model_refuses_more_candidates_than_its_bound(tmp_path):
    """A repository whose score model takes at most 50 candidates a request: 51 get a clear error
    naming the bound, 50 are answered, and the server keeps serving."""
    from posescore.clients import PoseScoreClient, PoseScoreError

    repository = _repository_with(tmp_path, "score", "max_candidates", "1000000", "50")
    rng = np.random.default_rng(21)
    poses = np.concatenate([rng.uniform(0, 400, (51, 17, 2)), rng.uniform(0.5, 1, (51, 17, 1))], -1).astype(np.float32)
    with TritonServer(repository, models=["score"]) as server:
        with PoseScoreClient(server.grpc_url, timeout=60) as client:
            with pytest.raises(PoseScoreError, match=r"candidates: 51 in one request, over this server's bound of 50"):
                client.score(poses[0], poses)
            assert client.score(poses[0], poses[:50]).scores.shape == (50,)


def test_small_dtw_requests_are_not_held_behind_a_large_one(triton_server):
    """A request within the bound but large (7,000 x 7,000 frames, 49M cells: seconds of work)
    holds one dtw instance; a small request sent after it runs in the other and is answered first."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    rng = np.random.default_rng(5)
    large = np.repeat(_poses(50, seed=3), 140, axis=0)
    large[..., :2] += rng.normal(0, 1, (7000, 17, 2)).astype(np.float32)
    order = []
    stubs = [psutil.Process(pid) for pid in triton_server.stub_pids("dtw")]
    assert len(stubs) == 2, "the dtw model runs two instances"
    before = [sum(s.cpu_times()[:2]) for s in stubs]
    client.async_infer("dtw", [_input("reference", large), _input("attempt", large[::-1].copy())],
                       callback=lambda result, error: order.append(("large", error)), client_timeout=300)
    # Only once one instance is busy with the large one (its stub has used 0.3 s of CPU; a sleep
    # was not enough on a loaded machine: the large request had not started when the next came).
    deadline = time.monotonic() + 60
    while max(sum(s.cpu_times()[:2]) - b for s, b in zip(stubs, before)) < 0.3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not order, "the large request was answered before it could be seen running"
    small = _poses(30, seed=2)
    for n in range(6):
        client.async_infer("dtw", [_input("reference", small), _input("attempt", small[::-1].copy())],
                           callback=lambda result, error, n=n: order.append((n, error)), client_timeout=300)
    deadline = time.monotonic() + 300
    while len(order) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(order) == 7 and all(error is None for _, error in order), [(n, e and e.message()) for n, e in order]
    # The first small request, sent while the large one runs, is answered before it: by the other
    # instance (with one instance it came after it). The later ones race the large one for the CPU.
    names = [name for name, _ in order]
    assert names.index(0) < names.index("large"), names


def test_http_on_survives_the_request_that_aborts_tritonserver():
    """With HTTP on, a 100-byte JSON request declaring a [1099511627776, 17, 3] FP32 input (which
    aborts tritonserver 2.51 with std::bad_alloc) is refused by the validating front, naming the
    input; the server stays up, and good HTTP requests are answered through the front."""
    import http.client

    from posescore.engine.serving.server import TritonServer

    def post(port, path, payload):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read() or b"{}")
        finally:
            connection.close()

    with TritonServer(models=["dtw", "score"], http=True) as server:
        killer = {"inputs": [{"name": "reference", "shape": [1099511627776, 17, 3], "datatype": "FP32", "data": [1]}]}
        status, answer = post(server.http_port, "/v2/models/dtw/infer", killer)
        assert status == 400 and "input 'reference': shape [1099511627776, 17, 3]" in answer["error"], answer
        status, answer = post(server.http_port, "/v2/models/dtw/infer",
                              {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}]})
        assert status == 400 and "holds 6 values, the request carries 2" in answer["error"]
        assert server.is_running()
        pose = _poses(1)[0]
        good = {"inputs": [{"name": "query", "shape": [1, 17, 3], "datatype": "FP32", "data": pose.ravel().tolist()},
                           {"name": "candidates", "shape": [1, 2, 17, 3], "datatype": "FP32",
                            "data": np.stack([pose, pose]).ravel().tolist()}]}
        status, answer = post(server.http_port, "/v2/models/score/infer", good)
        assert status == 200, answer
        scores = next(o for o in answer["outputs"] if o["name"] == "scores")
        assert scores["data"] == pytest.approx([100.0, 100.0], abs=1e-3)
        # The binary extension (what tritonclient.http sends): a JSON header, then the raw tensors.
        query, candidates = pose[None], np.stack([pose, pose])[None]
        header = json.dumps({"inputs": [
            {"name": "query", "shape": [1, 17, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": query.nbytes}},
            {"name": "candidates", "shape": [1, 2, 17, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": candidates.nbytes}}]}).encode()
        for body, want in ((header + query.tobytes() + candidates.tobytes(), 200),
                           (header + query.tobytes() + candidates.tobytes()[:-8], 400)):
            connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
            connection.request("POST", "/v2/models/score/infer", body=body,
                               headers={"Inference-Header-Content-Length": str(len(header))})
            assert connection.getresponse().status == want
            connection.close()
        assert server.is_running()
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        connection.request("GET", "/v2/health/ready")
        assert connection.getresponse().status == 200
        connection.close()


def test_search_refuses_a_clip_search_over_its_cells_bound(tmp_path):
    """A repository whose search model takes at most 100 DTW cells a clip search: a 6-frame clip
    over 70 poses (420 cells) is refused before any work, naming the bound and what narrows it;
    the same clip over one video of 15 poses (90 cells) and a pose query are answered."""
    from posescore.clients import PoseScoreClient, PoseScoreError
    from conftest import random_poses
    from posescore.engine.archive import add_video

    repository = _repository_with(tmp_path, "search", "max_clip_cells", "4000000000", "100")
    root = tmp_path / "archives"
    rng = np.random.default_rng(4)
    first, second = random_poses(rng, 15), random_poses(rng, 55)
    add_video(root / "bounded", "vid-a", "first.mp4", first, frames=np.arange(15), times=np.arange(15) / 10.0)
    add_video(root / "bounded", "vid-b", "second.mp4", second, frames=np.arange(55), times=np.arange(55) / 10.0)
    with TritonServer(repository, models=["search"], archive_root=root) as server:
        with PoseScoreClient(server.grpc_url, timeout=60) as client:
            with pytest.raises(PoseScoreError, match=r"6 query frames x 70 poses = 420 DTW cells, over this "
                                                     r"server's bound of 100 per request \(parameter max_clip_cells\)"):
                client.search("bounded", first[3:9], k=2)
            assert client.search("bounded", first[3:9], k=1, video="first*")[0].score > 99
            assert client.search("bounded", first[4], k=1)[0].score == pytest.approx(100, abs=1e-3)
        # A clip_score request (the sharded client's second phase) sending a million candidates
        # is refused by the same bound before any of them is looked at.
        def tensor(name, array, datatype):
            t = grpcclient.InferInput(name, list(array.shape), datatype)
            t.set_data_from_numpy(array)
            return t

        rows = np.zeros((1_000_000, 3), np.int64)
        rows[:, 2] = 5
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match=r"candidates: 1,000,000 candidates of 6,000,000 rows "
                                                           r"against a 6-pose query are 36,000,000 DTW cells, over "
                                                           r"this server's bound of 100"):
            raw.infer("search", [tensor("archive", np.array([b"bounded"], np.object_), "BYTES"),
                                 tensor("query", first[3:9], "FP32"),
                                 tensor("phase", np.array([b"clip_score"], np.object_), "BYTES"),
                                 tensor("candidates", rows, "INT64"),
                                 tensor("candidate_costs", np.zeros(len(rows), np.float32), "FP32")])
        raw.close()


def _repository_with(tmp_path, model, key, default, value):
    """A repository holding a copy of ``model`` whose parameter ``key`` (``default`` in ours) is ``value``."""
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, repository / model, ignore=shutil.ignore_patterns("__pycache__"))
    config = repository / model / "config.pbtxt"
    text = config.read_text()
    assert f'key: "{key}" value: {{ string_value: "{default}" }}' in text
    config.write_text(text.replace(f'key: "{key}" value: {{ string_value: "{default}" }}',
                                   f'key: "{key}" value: {{ string_value: "{value}" }}'))
    return repository


# -- the HTTP front as a hostile client meets it (issue 31) -------------------------------------

@pytest.fixture(scope="module")
def http_server():
    """One server with HTTP on (the score model only) for the front's tests."""
    with TritonServer(models=["score"], http=True) as server:
        yield server


def _exchange(port, data, timeout=10.0):
    """Send raw bytes to 127.0.0.1:port; (status, JSON answer) of the response (None, None if the
    connection closed without one)."""
    import http.client

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = http.client.HTTPResponse(sock)
        try:
            answer.begin()
        except http.client.RemoteDisconnected:
            return None, None
        body = answer.read()
        try:
            return answer.status, json.loads(body or b"{}")
        except ValueError:
            return answer.status, {"raw": body[:200].decode(errors="replace")}


def _request(method, target, body=b"", headers=None):
    """A raw HTTP/1.1 request, the target exactly as given."""
    body = body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = [f"{method} {target} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _good_score_request():
    pose = _poses(1)[0]
    return {"inputs": [{"name": "query", "shape": [1, 17, 3], "datatype": "FP32", "data": pose.ravel().tolist()},
                       {"name": "candidates", "shape": [1, 2, 17, 3], "datatype": "FP32",
                        "data": np.stack([pose, pose]).ravel().tolist()}]}


_KILLER = {"inputs": [{"name": "query", "shape": [1099511627776, 17, 3], "datatype": "FP32", "data": [1]}]}


def test_http_front_takes_only_origin_form_targets_on_its_allowlist(http_server):
    """Absolute-form targets, query strings, '//', dot segments, percent-encoding, routes that are
    not Triton's (or not open to clients), wrong methods: each refused 400 in Triton's error format,
    naming the problem. The absolute-form request that declared 2^40 x 17 x 3 used to reach Triton
    unchecked and abort it."""
    port = http_server.http_port
    cases = [
        ("POST", "http://x/v2/models/score/infer", _KILLER, "origin-form"),
        ("POST", "HTTP://127.0.0.1/v2/models/score/infer", _KILLER, "origin-form"),
        ("POST", "/v2/models/score/infer?x=1", _KILLER, "query"),
        ("POST", "/v2/models/score/infer#x", _KILLER, "fragment"),
        ("POST", "//v2/models/score/infer", _KILLER, "not a route"),
        ("POST", "/v2//models/score/infer", _KILLER, "not a route"),
        ("POST", "/v2/models/score/./infer", _KILLER, "not a route"),
        ("POST", "/v2/models/x/../score/infer", _KILLER, "not a route"),
        ("POST", "/v2/models/score/infer/", _KILLER, "not a route"),
        ("POST", "/v2/models/sc%6Fre/infer", _KILLER, "percent"),
        ("POST", "/v2/models/score/versions/1/../../score/infer", _KILLER, "not a route"),
        ("POST", "/v2/models/score/generate", {"query": [1]}, "not a route"),
        ("POST", "/v2/repository/index", {}, "not a route"),
        ("GET", "/v2/logging", b"", "not a route"),
        ("POST", "/v2/systemsharedmemory/region/x/register", {}, "not a route"),
        ("GET", "/v2/models/score/infer", b"", "POST"),
        ("PUT", "/v2/models/score/infer", _KILLER, "POST"),
        ("DELETE", "/v2/health/ready", b"", "GET"),
        ("FOO", "/v2/health/ready", b"", "GET"),
        ("POST", "*", _KILLER, "origin-form"),
    ]
    for method, target, body, expected in cases:
        status, answer = _exchange(port, _request(method, target, body))
        assert status == 400 and expected in answer.get("error", ""), (method, target, status, answer)
    assert http_server.is_running()
    # A version's route is validated like the model's own, and a good request there is answered.
    status, answer = _exchange(port, _request("POST", "/v2/models/score/versions/1/infer", _KILLER))
    assert status == 400 and "input 'query': shape [1099511627776, 17, 3]" in answer["error"], answer
    status, answer = _exchange(port, _request("POST", "/v2/models/score/versions/1/infer", _good_score_request()))
    assert status == 200, answer
    for target in ("/v2/health/ready", "/v2/health/live", "/v2", "/v2/models/score", "/v2/models/score/ready",
                   "/v2/models/score/config", "/v2/models/score/stats", "/v2/models/stats",
                   "/v2/models/score/versions/1/ready"):
        status, answer = _exchange(port, _request("GET", target))
        assert status == 200, (target, answer)
    assert http_server.is_running()


def test_json_the_front_and_triton_could_read_apart_is_refused(http_server):
    """Duplicate keys (Python keeps the last, Triton's parser reads the first: a valid shape after
    the 2^40 one), a second Inference-Header-Content-Length, a compressed body, a header length that
    is not plain digits: each refused 400 before Triton sees it."""
    port = http_server.http_port
    pose = _poses(1)[0].ravel().tolist()
    duplicate = ('{"inputs": [{"name": "query", "shape": [1099511627776, 17, 3], "shape": [1, 17, 3], '
                 '"datatype": "FP32", "data": ' + json.dumps(pose) + '}]}').encode()
    status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", duplicate))
    assert status == 400 and "duplicate key 'shape'" in answer["error"], answer
    body = json.dumps(_good_score_request()).encode()
    for headers, expected in (({"Inference-Header-Content-Length": "+10"}, "Inference-Header-Content-Length"),
                              ({"Content-Encoding": "gzip"}, "Content-Encoding")):
        status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", body, headers))
        assert status == 400 and expected in answer["error"], (headers, answer)
    twice = _request("POST", "/v2/models/score/infer", body).replace(
        b"Connection: close\r\n", b"Connection: close\r\nInference-Header-Content-Length: 10\r\n"
                                  b"Inference-Header-Content-Length: 20\r\n")
    status, answer = _exchange(port, twice)
    assert status == 400 and "more than one Inference-Header-Content-Length" in answer["error"], answer
    assert http_server.is_running()


def test_triton_private_http_port_answers_only_the_front(http_server):
    """Triton's own HTTP endpoint (a loopback port any local user can reach) answers health,
    metadata, config, statistics and inference only with the key the front holds: a direct request
    is refused 403, the same through the front is answered."""
    private, public = http_server._backend_http_port, http_server.http_port
    good = _good_score_request()
    for method, target, body in (("POST", "/v2/models/score/infer", good), ("GET", "/v2/health/ready", b""),
                                 ("GET", "/v2/models/score", b""), ("GET", "/v2/models/score/config", b""),
                                 ("GET", "/v2/models/score/stats", b""), ("GET", "/v2", b"")):
        status, answer = _exchange(private, _request(method, target, body))
        assert status == 403 and "restricted" in answer.get("error", ""), (target, status, answer)
        status, answer = _exchange(public, _request(method, target, body))
        assert status == 200, (target, status, answer)
    # The key's header sent by a client is not passed on as theirs: a wrong key stays wrong.
    status, answer = _exchange(public, _request("GET", "/v2/health/ready", headers={"posescore-front": "guess"}))
    assert status == 200
    status, _ = _exchange(private, _request("GET", "/v2/health/ready", headers={"posescore-front": "guess"}))
    assert status == 403


def test_a_million_dimensions_or_a_huge_body_are_refused_at_once(http_server):
    """A 2 MB body declaring 1,000,000 dimensions stalled the whole front for ~22 s (math.prod
    before the size check): refused at once naming the bound, and a health request sent beside
    it is answered at once. A declared body over the front's bound is refused 413 unread."""
    import threading

    from posescore.engine.serving import http_front

    port = http_server.http_port
    many = {"inputs": [{"name": "query", "shape": [2] * 1_000_000, "datatype": "FP32", "data": [1]}]}
    result = {}

    def send():
        result["answer"] = _exchange(port, _request("POST", "/v2/models/score/infer", many), timeout=5)

    started = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.05)
    status, _ = _exchange(port, _request("GET", "/v2/health/ready"), timeout=5)
    assert status == 200 and time.monotonic() - started < 3
    sender.join(10)
    status, answer = result["answer"]
    assert status == 400 and f"at most {http_front.MAX_DIMS} dimensions" in answer["error"], answer
    assert time.monotonic() - started < 3
    nine = {"inputs": [{"name": "query", "shape": [1] * 9, "datatype": "FP32", "data": [1]}]}
    status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", nine))
    assert status == 400 and "9 dimensions" in answer["error"], answer
    huge = {"inputs": [{"name": "query", "shape": [1 << 62, 1 << 62], "datatype": "FP32", "data": [1]}]}
    status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", huge))
    assert status == 400 and "query" in answer["error"], answer
    # A body over the bound: refused from its Content-Length, without waiting for it.
    assert http_front.MAX_BODY <= 512 << 20
    head = (f"POST /v2/models/score/infer HTTP/1.1\r\nContent-Length: {http_front.MAX_BODY + 1}\r\n\r\n").encode()
    started = time.monotonic()
    status, answer = _exchange(port, head + b"{", timeout=5)
    assert status == 413 and f"{http_front.MAX_BODY:,}" in answer["error"], answer
    assert time.monotonic() - started < 2
    # Under the front's bound but over the model's own (score's max_request_bytes), refused the same way.
    head = b"POST /v2/models/score/infer HTTP/1.1\r\nContent-Length: 210000000\r\n\r\n"
    status, answer = _exchange(port, head + b"{", timeout=5)
    assert status == 413 and "model 'score' of 210,000,000 bytes is over the model's bound of 205,048,576" in \
        answer["error"], answer
    assert http_server.is_running()


def test_half_sent_requests_are_closed_and_connections_bounded(http_server):
    """A front with a 2 s request timeout and room for 5 connections: half-sent requests (headers
    never ended, a body cut short, a request trickled a byte at a time) are answered 408 and closed
    within the timeout; while three are held a normal request is answered; a connection beyond the
    bound is answered 503 at once; once the half-sent ones are gone, requests are answered again."""
    import threading

    from posescore.engine.serving import http_front
    from posescore.engine.serving.http_front import HttpFront
    from posescore.engine.serving.server import free_port

    assert 1 <= http_front.REQUEST_TIMEOUT <= 30 and 1 <= http_front.MAX_CONNECTIONS <= 1024
    front = HttpFront("127.0.0.1", free_port(), http_server._backend_http_port, key=http_server.front_key,
                      timeout=2.0, max_connections=5).start()
    try:
        port = front.port
        body = json.dumps(_good_score_request()).encode()
        halves = [b"POST /v2/models/score/infer HTTP/1.1\r\nContent-Le",
                  _request("POST", "/v2/models/score/infer", body)[:-100],
                  b"GET /v2/health/ready HTTP/1.1\r\n"]
        held = []
        started = time.monotonic()
        for half in halves:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(half)
            held.append(sock)
        time.sleep(0.1)
        status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", body))
        assert status == 200, answer
        trickle = socket.create_connection(("127.0.0.1", port), timeout=10)  # a byte every 0.2 s

        def send_slowly():
            for byte in b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"[:16]:
                with contextlib.suppress(OSError):
                    trickle.sendall(bytes([byte]))
                time.sleep(0.2)

        sender = threading.Thread(target=send_slowly)
        sender.start()
        # The fifth connection, once the normal request's slot is free again (its thread ends just
        # after the answer): a connection that is answered nothing at once holds a slot.
        while True:
            fifth = socket.create_connection(("127.0.0.1", port), timeout=0.2)
            try:
                early = fifth.recv(100)
            except TimeoutError:
                break
            fifth.close()
            assert early.startswith(b"HTTP/1.1 503") and time.monotonic() - started < 2, early
            time.sleep(0.02)
        fifth.settimeout(10)
        fifth.sendall(b"GET /v2/hea")
        # The sixth, over the bound: 503 at once.
        status, answer = _exchange(port, _request("GET", "/v2/health/ready"), timeout=5)
        assert status == 503 and "connections" in answer["error"], answer
        sender.join()
        for sock in held + [trickle, fifth]:
            data = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    data += chunk
            sock.close()
            assert data.startswith(b"HTTP/1.1 408"), data[:100]
            assert b"timed out" in data
        assert time.monotonic() - started < 6
        status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", body))
        assert status == 200, answer
    finally:
        front.stop()


def test_malformed_inference_json_gets_400_naming_the_problem(http_server, monkeypatch):
    """An input whose parameters is a string raised AttributeError in the handler: the connection
    closed with no answer. Every malformed structure is answered 400 naming the problem, and an
    unexpected error in the handler is answered 500, never a dropped connection."""
    port = http_server.http_port
    pose = _poses(1)[0].ravel().tolist()

    def query(**fields):
        tensor = {"name": "query", "shape": [1, 17, 3], "datatype": "FP32", "data": pose}
        tensor.update(fields)
        return {"inputs": [tensor]}

    cases = [
        (query(parameters="binary"), "input 'query': parameters must be an object"),
        (query(parameters=[1, 2]), "input 'query': parameters must be an object"),
        (query(parameters={"binary_data_size": True}), "binary_data_size"),
        (query(name=7), "input 0: name must be a string"),
        (query(name=None), "input 0: name must be a string"),
        (query(shape="1,17,3"), "shape must be a list"),
        (query(shape=[1, 17, -3]), "shape must be a list of integers >= 0"),
        (query(shape=[1, 17, 3.0]), "shape must be a list of integers >= 0"),
        (query(shape=[1, True, 3]), "shape must be a list of integers >= 0"),
        (query(datatype=["FP32"]), "unknown datatype"),
        (query(datatype="FLOAT"), "unknown datatype"),
        ({"inputs": {"name": "query"}}, "'inputs' list"),
        ({"inputs": ["query"]}, "input 0: expected an object"),
        ([1, 2], "'inputs' list"),
        ({**query(), "parameters": "x"}, "the request's parameters must be an object"),
        ({**query(), "outputs": "scores"}, "outputs must be a list"),
        ({**query(), "outputs": [{"name": "scores", "parameters": "x"}]}, "output 'scores': parameters must be"),
        ({**query(), "outputs": [{"name": 5}]}, "output 0: name must be a string"),
        ({**query(), "id": {"x": 1}}, "id must be a string"),
    ]
    for payload, expected in cases:
        status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", payload))
        assert status == 400 and expected in (answer or {}).get("error", ""), (payload, status, answer)
    from posescore.engine.serving import http_front

    def boom(*args, **kwargs):
        raise RuntimeError("an error nobody expected")

    monkeypatch.setattr(http_front, "check_infer_request", boom)
    status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", _good_score_request()))
    assert status == 500 and "internal error" in answer["error"], answer
    monkeypatch.undo()
    status, answer = _exchange(port, _request("POST", "/v2/models/score/infer", _good_score_request()))
    assert status == 200, answer
    assert http_server.is_running()

