"""engine.serving.supervisor against the real server: a killed python stub is noticed by a real probe and
its model reloaded; a killed tritonserver is started again on its port, the dead run's log kept."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from posescore.clients import PoseScoreClient, PoseScoreError
from conftest import random_poses
from posescore.engine.serving.server import TritonServer
from posescore.engine.serving.supervisor import Supervisor


def _scores_again(server, deadline_s=90.0):
    """Score one request, retrying until the deadline; the answer."""
    rng = np.random.default_rng(0)
    poses = random_poses(rng, 5)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with PoseScoreClient(server.grpc_url, timeout=10) as client:
                return client.score(poses[0], poses)
        except Exception:  # noqa: BLE001 - not yet recovered
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def supervised(tmp_path):
    server = TritonServer(models=["score"]).start()
    supervisor = Supervisor(server, interval=0.5, logs_dir=tmp_path / "logs").start()
    yield server, supervisor
    supervisor.stop()
    server.stop()


def test_a_killed_stub_is_noticed_and_its_model_reloaded(supervised):
    """The killed stub's model reloaded, and the server's metrics page telling it beside Triton's:
    the repair counted by kind and model with how long it took, probes by outcome, health."""
    import urllib.request

    server, supervisor = supervised
    assert _scores_again(server).scores[0] == pytest.approx(100, abs=1e-3)
    (stub,) = server.stub_pids("score")
    os.kill(stub, signal.SIGKILL)
    result = _scores_again(server)
    assert result.scores[0] == pytest.approx(100, abs=1e-3)
    deadline = time.monotonic() + 30
    while not any(e["what"] == "reloaded" for e in supervisor.events) and time.monotonic() < deadline:
        time.sleep(0.1)
    whats = [e["what"] for e in supervisor.events]
    assert "model failing" in whats and "reloaded" in whats, supervisor.events
    assert supervisor.healthy
    page = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
              if line and not line.startswith("#")}
    assert values['posescore_supervisor_repairs_total{kind="model_reloaded",model="score"}'] == 1
    assert 0 < values['posescore_supervisor_last_repair_seconds{kind="model_reloaded"}'] < 120
    assert values['posescore_supervisor_probes_total{model="score",outcome="alive"}'] >= 1
    assert values['posescore_supervisor_probes_total{model="score",outcome="failing"}'] >= 1
    assert "posescore_supervisor_healthy" in values and 'nv_inference_request_success{model="score",version="1"}' in values


def test_a_killed_server_is_started_again_on_its_port_and_its_log_kept(supervised):
    server, supervisor = supervised
    port = server.grpc_port
    os.killpg(os.getpgid(server.process.pid), signal.SIGKILL)
    result = _scores_again(server)
    assert result.scores[0] == pytest.approx(100, abs=1e-3) and server.grpc_port == port
    restarting = next(e for e in supervisor.events if e["what"] == "restarting")
    assert "exited" in restarting["reason"] and "Started GRPCInferenceService" in open(restarting["log"]).read()
    # The server answers a moment before the supervisor's thread records that it restarted it.
    deadline = time.monotonic() + 30
    while not any(e["what"] == "restarted" for e in supervisor.events) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(e["what"] == "restarted" for e in supervisor.events) and supervisor.runs == 2


def test_a_client_rides_through_a_reload_and_still_fails_fast_on_a_model_never_loaded():
    """A supervisor repairs a dead stub by unloading its model and loading it again; between the
    two the server calls the model unknown, and by the time the client asks whether the server is
    ready the load may have ended (a race CI met). A client that this server answered for the
    model retries through that window; a model it never answered is a final error at once."""
    import threading

    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(2)
    poses = random_poses(rng, 5)
    server = TritonServer(models=["score"]).start()
    admin = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with PoseScoreClient(server.grpc_url, timeout=60) as client:
            assert client.score(poses[0], poses).scores[0] == pytest.approx(100, abs=1e-3)
            admin.unload_model("score", headers=server.admin_headers)
            while admin.is_model_ready("score"):
                time.sleep(0.05)
            loader = threading.Timer(1.0, lambda: admin.load_model("score", headers=server.admin_headers))
            loader.start()
            start = time.monotonic()
            assert client.score(poses[0], poses).scores[0] == pytest.approx(100, abs=1e-3)
            assert time.monotonic() - start > 0.9  # it waited for the load
            loader.join()
            start = time.monotonic()
            with pytest.raises(PoseScoreError, match="dtw") as info:
                client.dtw(poses, poses)
            assert info.value.status == "NOT_FOUND" and time.monotonic() - start < 1.0
    finally:
        admin.close()
        server.stop()


def test_a_jobs_embedded_server_rides_through_a_killed_stub_and_a_killed_server():
    """``server_url(None)`` (every job's embedded server) is supervised, and the client retries
    through the repair within its deadline: the job's calls answer, with no retry of its own."""
    from posescore.engine.serving.supervisor import server_url

    rng = np.random.default_rng(1)
    poses = random_poses(rng, 5)
    events = []
    with server_url(None, models=["score"], notify=events.append) as url, PoseScoreClient(url, timeout=120) as client:
        assert client.score(poses[0], poses).scores[0] == pytest.approx(100, abs=1e-3)
        server = _server_of(url)
        (stub,) = server.stub_pids("score")
        os.kill(stub, signal.SIGKILL)
        assert client.score(poses[0], poses).scores[0] == pytest.approx(100, abs=1e-3)
        assert _seen(events, "reloaded"), events
        os.killpg(os.getpgid(server.process.pid), signal.SIGKILL)
        assert client.score(poses[0], poses).scores[0] == pytest.approx(100, abs=1e-3)
        assert _seen(events, "restarted"), events


def _seen(events, what, within=30.0):
    """Whether the supervisor reports ``what`` within ``within`` seconds. The client may be
    answered a moment before the event: the supervisor reports a repair once its own check of
    it has passed (CI runs asserted in that moment)."""
    deadline = time.monotonic() + within
    while what not in [e["what"] for e in events] and time.monotonic() < deadline:
        time.sleep(0.1)
    return what in [e["what"] for e in events]


def _server_of(url):
    """The running TritonServer object serving ``url`` (found among the live objects)."""
    import gc

    return next(o for o in gc.get_objects() if isinstance(o, TritonServer) and o.is_running() and o.grpc_url == url)


def test_posescore_probe_sees_a_dead_stub_that_triton_calls_ready():
    """``posescore probe`` (a liveness check for a deployment without the supervisor): 0 while
    every model answers; 1 naming the model once its stub is killed, though Triton still says
    the server and the model are ready."""
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("posescore"))
    with TritonServer(models=["score", "dtw"]) as server:
        ok = subprocess.run([exe, "probe", "--url", server.grpc_url, "--model", "score", "--model", "dtw"],
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and "score: alive" in ok.stdout and "dtw: alive" in ok.stdout, ok
        (stub,) = server.stub_pids("score")
        os.kill(stub, signal.SIGKILL)
        time.sleep(1)
        with PoseScoreClient(server.grpc_url, timeout=10) as client:
            assert client.is_ready(["score"])  # Triton's view
        bad = subprocess.run([exe, "probe", "--url", server.grpc_url, "--model", "score", "--model", "dtw"],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and "score: failing" in bad.stdout and "dtw: alive" in bad.stdout, bad
        assert "score not answering" in bad.stderr

def test_killed_stubs_of_dtw_and_live_are_repaired_and_a_stream_goes_on(tmp_path):
    """dtw runs two instances: after a kill -9 of one stub and the reload, the model has its two
    stubs again, not the old sibling beside two new ones (Triton's unload left it running). The
    live model's stub killed mid-stream: the supervisor reloads the model (the streams' state is
    lost with the stub), the session opens its stream again, sends the frames since the last
    repetition, and ends with every repetition, the count carried over."""
    from posescore.clients.live import LiveSession
    from test_live import arm_raise, stream_of_reps

    def reloaded(model, count):
        deadline = time.monotonic() + 90
        while sum(e["what"] == "reloaded" and e["model"] == model for e in supervisor.events) < count \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        return sum(e["what"] == "reloaded" and e["model"] == model for e in supervisor.events)

    rep, stream = arm_raise(), np.concatenate([stream_of_reps()] * 2)
    with TritonServer(models=["dtw", "live"]) as server, \
            Supervisor(server, interval=0.5, logs_dir=tmp_path) as supervisor:
        assert len(server.stub_pids("dtw")) == 2
        for round_ in range(2):
            os.kill(server.stub_pids("dtw")[0], signal.SIGKILL)
            assert reloaded("dtw", round_ + 1) == round_ + 1, supervisor.events
            assert len(server.stub_pids("dtw")) == 2, (round_, server.stub_pids("dtw"), supervisor.events)
        live = LiveSession(server.grpc_url, rep, reference_fps=30.0, fps=30.0, timeout=10.0)
        reps = []
        for n, pose in enumerate(stream):
            if n == 75:
                (stub,) = server.stub_pids("live")
                os.kill(stub, signal.SIGKILL)
            reps += [e["rep"] for e in live.send(pose, n / 30.0, n) if e["event"] == "rep"]
        end = live.end()
        assert reloaded("live", 1) == 1, supervisor.events
    assert live.reopened >= 1 and reps == list(range(1, len(reps) + 1))
    assert end["count"] == 8 and [r["backwards"] for r in end["reps"]] == [False, True, False, True] * 2
