"""The numba-CUDA kernels compile to PTX for an H100 (sm_90), without a GPU or a driver.

The simulator runs the kernels' logic in Python; this checks what it cannot: that numba-CUDA
types and lowers them (NVVM and NVRTC come from PyPI, in the dev extra). It runs in a subprocess
because the test process uses the simulator. Typing a call to a device function (``fused_topk``
calls ``insert_sorted``) asks the driver for the current device, only for its compute capability;
the script answers sm_90 in its place.
"""

import os
import subprocess
import sys

SCRIPT = """
from numba import cuda, types
import numba.cuda.dispatcher


class SM90:
    compute_capability = (9, 0)


numba.cuda.dispatcher.get_current_device = SM90
import posescore.kernels._cuda_kernels as ck
f32, i32, i64, b1 = types.float32, types.int32, types.int64, types.boolean
signatures = {
    "dtw_wavefront": (f32[:, :, ::1], f32[:, :, ::1], i32[::1], i32[::1], i32, f32[:, :, ::1], i32[:, :, ::1],
                      f32[::1], i32[::1]),
    "subsequence_wavefront": (f32[:, ::1], f32[:, ::1], f32[::1], f32[::1], types.uint8[::1], b1, f32, i64[::1],
                              i64[::1], i64[::1],
                              f32[:, ::1], i64[:, ::1], b1, f32[::1], i64[::1], f32[:, ::1], i64[:, ::1],
                              f32[:, ::1], i64[:, ::1]),
    "fused_topk": (f32[:, ::1], f32[:, ::1], i32, b1, f32[:, :, ::1], i64[:, :, ::1]),
    "normalize_poses": (f32[:, :, ::1], b1, f32, f32, f32[:, ::1], f32[:, ::1], b1[::1]),
    "pose_scores_kernel": (f32[:, ::1], f32[:, ::1], f32[:, ::1], f32[:, ::1], i64[::1], f32[:, ::1], f32[:, ::1],
                           i64, f32, b1, f32[::1], b1[::1]),
    "part_scores_kernel": (f32[:, ::1], f32[:, ::1], f32[:, ::1], f32[:, ::1], i64[::1], f32[:, ::1], f32[:, ::1],
                           i64[:, ::1], i64[::1], f32, i64, b1[::1], f32[:, ::1], b1[:, ::1]),
    "terms_kernel": (f32[:, ::1], f32[:, ::1], i64[:, ::1], f32[:, ::1], f32[:, ::1]),
    "aligned_parts_kernel": (f32[:, ::1], f32[:, ::1], f32[:, ::1], f32[:, ::1], i64[:, ::1], i64[::1], f32,
                             f32[:, ::1], b1[:, ::1]),
}
for name, signature in signatures.items():
    ptx, _ = cuda.compile_ptx(getattr(ck, name).py_func, signature, cc=(9, 0))
    assert ".target sm_90" in ptx and ".entry" in ptx, name
    print(name, len(ptx))
"""


def test_cuda_kernels_compile_to_ptx_for_sm90():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all(name in out.stdout for name in ("dtw_wavefront", "subsequence_wavefront", "fused_topk",
                                               "normalize_poses", "pose_scores_kernel", "part_scores_kernel",
                                               "terms_kernel", "aligned_parts_kernel"))
