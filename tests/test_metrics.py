"""posescore's own metrics on Triton's metrics endpoint: refusals by reason, probes apart from
client traffic, live streams; Triton's latency summaries."""

import time

import numpy as np
import pytest

from test_server import _poses


def _metrics(server) -> dict:
    """posescore's own metrics of ``server``: {'name{labels}': value}."""
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("posescore_")}


def test_metrics_count_refusals_by_reason_probes_apart_and_live_streams(triton_server):
    """posescore's own counters on Triton's metrics endpoint: refusals by model and reason, the
    supervisor's probes apart from client traffic, live streams held, opened and ended; and
    Triton's latency summaries (p50, p90, p99)."""
    from posescore.clients import PoseScoreClient, PoseScoreError
    from posescore.clients.live import LiveSession
    from posescore.engine.serving.supervisor import probe_model

    poses = _poses(5)
    before = _metrics(triton_server)
    with PoseScoreClient(triton_server.grpc_url) as client:
        for _ in range(2):
            with pytest.raises(PoseScoreError, match="NaN"):
                client.score(poses[0], np.full((2, 17, 3), np.nan, np.float32))
        with pytest.raises(PoseScoreError, match="DTW cells"):
            client.dtw(np.resize(poses, (9000, 17, 3)), np.resize(poses, (9000, 17, 3)))
    assert probe_model(triton_server.grpc_url, "score") == ("alive", None)
    live = LiveSession(triton_server.grpc_url, poses, reference_fps=30.0)
    live.send(poses[0], 0.0)
    deadline = time.monotonic() + 10  # Triton reads the metrics every 2 s
    while time.monotonic() < deadline:
        during = _metrics(triton_server)
        if during.get('posescore_live_streams{model="live"}', 0) >= 1:
            break
        time.sleep(0.5)
    live.end()

    def delta(name):
        return during.get(name, 0.0) - before.get(name, 0.0)

    assert delta('posescore_requests_refused_total{model="score",reason="invalid_input"}') == 2
    assert delta('posescore_requests_refused_total{model="dtw",reason="over_bound"}') == 1
    assert delta('posescore_probe_requests_total{model="score"}') == 1
    assert delta('posescore_live_streams_opened_total{model="live"}') >= 1
    assert during['posescore_live_streams{model="live"}'] >= 1
    import urllib.request

    text = urllib.request.urlopen(triton_server.metrics_url, timeout=10).read().decode()
    assert 'nv_inference_request_summary_us{model="score",version="1",quantile="0.99"}' in text
