"""Shared fixtures. Without a GPU, numba-CUDA kernels run in numba's CUDA simulator."""

import glob
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI draws the same examples every run (a property test cannot fail one submission at random);
# elsewhere each run explores new ones, and .hypothesis/ replays any failure found.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# An NVIDIA device node beside the driver's tool (checked before numba.cuda is first imported,
# which the simulator setting must precede). Without one, numba-CUDA kernels run in the simulator.
HAS_GPU = shutil.which("nvidia-smi") is not None and bool(glob.glob("/dev/nvidia[0-9]*"))
if not HAS_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

try:
    import cupy

    cupy.zeros(1)  # a CUDA runtime that cannot start a device fails here
except Exception:  # noqa: BLE001 - any failure means no usable CuPy
    cupy = None


def pytest_configure(config):
    """Under pytest-xdist, the controller first starts and stops one embedded server: its python
    stubs compile the models' numba kernels into numba's cache (a fresh clone has none), once,
    rather than every worker's server compiling the same kernels at the same time."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, TritonServer, repository_models

        # The landmarks model compiles nothing (NumPy and onnxruntime): left out.
        with TritonServer(models=[m for m in repository_models(DEFAULT_MODEL_REPOSITORY) if m != "landmarks"]):
            pass


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """Run a test body once on NumPy (CPU path) and once on CuPy (GPU path)."""
    if request.param == "cupy":
        if cupy is None:
            pytest.skip("CuPy with a CUDA device is not available on this machine")
        return cupy
    return np


def asnumpy(x):
    return cupy.asnumpy(x) if cupy is not None and isinstance(x, cupy.ndarray) else np.asarray(x)


def random_poses(rng, n, width=640.0, height=480.0, missing=0.0):
    """``[n, 17, 3]`` float32 pixel poses with confidences in (0.5, 1], a share ``missing`` at 0."""
    xy = rng.uniform(0, 1, (n, 17, 2)) * np.array([width, height])
    conf = rng.uniform(0.5, 1.0, (n, 17, 1))
    conf[rng.uniform(size=(n, 17, 1)) < missing] = 0.0
    return np.concatenate([xy, conf], axis=-1).astype(np.float32)


@pytest.fixture(scope="session")
def archive_root(tmp_path_factory):
    """The folder under which the test server may load archives."""
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="session")
def triton_server(archive_root):
    """The embedded Triton server on free loopback ports, every model loaded; stopped at the end."""
    from posescore.engine.serving.server import TritonServer

    with TritonServer(archive_root=archive_root) as server:
        yield server


def browser_dom(page: Path) -> str:
    """The DOM of ``page`` after its scripts ran, from Debian's chromium, headless (its video
    muted and playing for a few seconds of virtual time), with every host name unresolvable: a
    page that needed the network would fail to load."""
    import subprocess

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=4000",
                          "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--dump-dom", Path(page).resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def page_data(dom: str) -> dict:
    """The ``data-*`` attributes the report page's script set on its body (ready, video-duration,
    played, errors)."""
    import re

    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))
