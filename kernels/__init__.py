"""posescore kernels: pure array math on NumPy (CPU) or CuPy (GPU) arrays.

One public function per operation; the backend follows the type of the arrays passed in. The
implementations live in private modules (``_dtw``, ``_normalize``, ...); this package is their one
public face.

The private modules load on first use (PEP 562), so that the skeleton or the scoring constants cost a
client only NumPy, not numba: ``from posescore.kernels import dtw`` loads ``_dtw``.
"""

from __future__ import annotations

from posescore.lazy import lazy_exports

#: Each public name and the private module that defines it.
_EXPORTS = {
    "dtw": "_dtw", "dtw_path": "_dtw", "dtw_score": "_dtw", "dtw_step_distance": "_dtw",
    "DEFAULT_MIN_CONFIDENCE": "_normalize", "consistent_keypoints": "_normalize", "consistent_sides": "_normalize", "consistent_sides_step": "_normalize",
    "interpolate_frames": "_normalize", "normalize": "_normalize", "visible_keypoints": "_normalize",
    "METRICS": "_scoring", "SCORE_SCALES": "_scoring", "aligned_part_scores": "_scoring", "mirror_vectors": "_scoring",
    "part_scores": "_scoring", "pose_scores": "_scoring", "score_from_distance": "_scoring",
    "distance_for_score": "_scoring",
    "search_topk": "_search",
    "to_tiles": "_tiles", "from_tiles": "_tiles", "float32_rows": "_tiles", "TILE_ROWS": "_tiles",
    "KEYPOINT_NAMES": "skeleton", "LIMBS": "skeleton", "PART_NAMES": "skeleton",
    "subsequence_dtw": "_subsequence",
    "spring_step": "_streaming", "SpringState": "_streaming",
    "decode_poses": "_detect", "letterbox": "_detect",  # the pose model's pre- and post-processing
    # the landmark model's
    "landmark_rois": "_landmarks", "crop_affines": "_landmarks", "decode_landmarks": "_landmarks",
    "refine_from_heatmap": "_landmarks", "LANDMARK_INPUT_SIZE": "_landmarks",
    "LANDMARK_NAMES": "skeleton",
    "DETECT_IMAGE_SIZE": "_detect", "DETECT_CONFIDENCE": "_detect", "DETECT_IOU": "_detect",
    "DETECT_MAX_PEOPLE": "_detect",
    "SCORE_THRESHOLD": "_scoring", "SCORE_DECIMALS": "_scoring", "SCORE_BANDS": "_scoring",
    "under_threshold": "_scoring", "score_band": "_scoring",
    # The backend choice, for the engine's own dispatch (no numba imported by these).
    "array_module": "_backend", "cupy_or_none": "_backend", "to_numpy": "_backend", "parallel_map": "_backend",
    "MAX_MAGNITUDE": "_backend",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
