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
