"""posescore kernels: pure array math on NumPy (CPU) or CuPy (GPU) arrays.

One public function per operation; the backend follows the type of the arrays passed in.

The submodules load on first use (PEP 562), so that ``kernels.skeleton`` or ``kernels.scoring``'s
constants cost a client only NumPy, not numba: ``from kernels import dtw`` loads ``kernels.dtw``.
"""

from __future__ import annotations

import importlib
import sys
import types

#: Each public name and the submodule that defines it.
_EXPORTS = {
    "dtw": "dtw", "dtw_path": "dtw", "dtw_score": "dtw", "dtw_step_distance": "dtw",
    "DEFAULT_MIN_CONFIDENCE": "normalize", "consistent_keypoints": "normalize", "consistent_sides": "normalize",
    "interpolate_frames": "normalize", "normalize": "normalize",
    "SCORE_SCALES": "scoring", "aligned_part_scores": "scoring", "mirror_vectors": "scoring",
    "part_scores": "scoring", "pose_scores": "scoring", "score_from_distance": "scoring",
    "search_topk": "search", "to_tiles": "search", "from_tiles": "search", "float32_rows": "search", "TILE_ROWS": "search",
    "KEYPOINT_NAMES": "skeleton", "LIMBS": "skeleton", "PART_NAMES": "skeleton",
    "subsequence_dtw": "subsequence",
    "decode_poses": "detect", "letterbox": "detect",  # the pose model's pre- and post-processing
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Kernels(types.ModuleType):
    """``kernels.dtw`` and ``kernels.normalize`` name both a submodule and its public function:
    when the import system registers the submodule on this package (``setattr(kernels, "dtw",
    module)``, whoever imports it and whenever), the function is kept. The submodules stay in
    ``sys.modules`` (``from kernels.dtw import ...`` works)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Kernels
