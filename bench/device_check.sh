#!/usr/bin/env bash
# The GPU check (`make gpu-check`), for a machine with an NVIDIA GPU whose Python already has
# NumPy, CuPy, numba-cuda, SciPy, pytest and hypothesis (the lent H100 / H200 image: Python 3.12,
# CUDA 13, cupy-cuda13x, NumPy 2). What it lacks comes as wheels in .whl/ (`make gpu-wheels`
# here: dtaidistance and faiss-cpu, the tests' oracles, ~24 MB). It runs, each bounded in time:
#   1. the kernel tests on the device: the CuPy variants (the xp fixture) and the numba-CUDA
#      kernel tests (tests/test_cuda_kernels.py runs them on the GPU when one is present);
#   2. python -m bench.kernels --only gpu (DTW cells/s, top-10 over 100M x 34 float16 rows beside
#      the copy bandwidth, subsequence DTW over 108M frames).
# Everything goes to $OUT (default gpu-check-output/): device.txt, tests.txt, bench_gpu.txt.
# The exit code is that of the tests (the benchmark runs whatever they gave).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-output}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/posescore-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/posescore-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" - <<'PYEOF'
import platform, numpy, numba, cupy
import numba.cuda
print("python", platform.python_version(), "numpy", numpy.__version__, "numba", numba.__version__,
      "cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion())
print("numba.cuda available:", numba.cuda.is_available(), "| cupy devices:", cupy.cuda.runtime.getDeviceCount())
PYEOF
} >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# The kernel tests (NumPy and CuPy variants, CUDA kernels on the device); test_detect needs
# ultralytics' predictor as its oracle, which this image does not have.
timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -p no:cacheprovider -rfEs --durations=5 \
    tests/test_cuda_kernels.py tests/test_search.py tests/test_dtw.py tests/test_subsequence.py \
    tests/test_normalize_scores.py tests/test_cuda_ptx.py 2>&1 | tee "$OUT/tests.txt"
tests=${PIPESTATUS[0]}

timeout "${BENCH_TIMEOUT:-240}" "$PY" -m bench.kernels --only gpu --repeat 3 2>&1 | tee "$OUT/bench_gpu.txt"
exit "$tests"
