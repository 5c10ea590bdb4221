"""single_threaded_blas: every BLAS the kernels call runs on one thread inside it, and only there."""

import json
import subprocess
import sys

PROBE = """
import json
from threadpoolctl import threadpool_info
from posescore import kernels  # nothing has loaded SciPy's BLAS yet: numba compiles np.dot on first use
from posescore.kernels._backend import single_threaded_blas

def blas():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

with single_threaded_blas():
    inside = blas()
with single_threaded_blas():  # the cached controller, a second time
    again = blas()
print(json.dumps({"inside": inside, "again": again, "after": blas()}))
"""


def test_numpy_and_scipy_blas_limited_then_restored():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"OPENBLAS_NUM_THREADS": "2", "PATH": ""})
    seen = json.loads(out.stdout)
    paths = " ".join(seen["inside"])
    assert "numpy" in paths and "scipy" in paths, seen  # numba's np.dot goes through SciPy's BLAS
    assert set(seen["inside"].values()) == {1} and set(seen["again"].values()) == {1}, seen
    assert set(seen["after"].values()) == {2}, seen
