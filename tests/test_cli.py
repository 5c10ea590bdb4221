"""The posescore console script."""

import json
import subprocess
import sys
from pathlib import Path


def test_info_reports_backends():
    exe = Path(sys.executable).with_name("posescore")
    out = subprocess.run([str(exe), "info", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["numpy"].startswith("1.") and info["numba_threads"] >= 1


def test_bad_usage_exits_2():
    exe = Path(sys.executable).with_name("posescore")
    out = subprocess.run([str(exe), "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_models_export_is_skipped_when_current():
    from posescore.engine.serving.export import is_current, onnx_path

    if not is_current():
        import pytest

        pytest.skip("the pose model is not exported (make model)")
    exe = Path(sys.executable).with_name("posescore")
    before = onnx_path().stat().st_mtime
    out = subprocess.run([str(exe), "models", "export"], capture_output=True, text=True, check=True)
    assert "up to date" in out.stdout and onnx_path().stat().st_mtime == before


def test_a_url_that_does_not_answer_fails_within_seconds_naming_it():
    import time

    from posescore.engine.media.samples import BASKETBALL
    from posescore.engine.serving.server import free_port

    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    exe = Path(sys.executable).with_name("posescore")
    start = time.monotonic()
    out = subprocess.run([str(exe), "pose", str(BASKETBALL), "--url", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and f"--url {url}: no posescore server answers there" in out.stderr, out.stderr
    assert time.monotonic() - start < 30  # the clients' 120 s deadline is for a server that answered before


def test_an_image_is_refused_as_a_movement_before_anything_starts(tmp_path):
    from posescore.engine.media.samples import BASKETBALL, SAMPLE_VIDEO

    exe = Path(sys.executable).with_name("posescore")
    for args, role in ((["compare", str(BASKETBALL), str(SAMPLE_VIDEO)], "reference"),
                       (["reps", str(SAMPLE_VIDEO), str(BASKETBALL)], "attempt")):
        out = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and f"the {role} must be a movement" in out.stderr, out.stderr
        assert "starting the embedded Triton server" not in out.stderr  # refused before any server or decoding
