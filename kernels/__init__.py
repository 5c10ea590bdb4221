"""posescore kernels: pure array math on NumPy (CPU) or CuPy (GPU) arrays.

One public function per operation; the backend follows the type of the arrays passed in.
"""

from .dtw import dtw, dtw_path, dtw_score
from .normalize import DEFAULT_MIN_CONFIDENCE, consistent_keypoints, interpolate_frames, normalize
from .scoring import SCORE_SCALES, aligned_part_scores, mirror_vectors, part_scores, pose_scores, score_from_distance
from .search import search_topk
from .skeleton import KEYPOINT_NAMES, LIMBS, PART_NAMES
from .subsequence import subsequence_dtw

__all__ = [
    "DEFAULT_MIN_CONFIDENCE", "KEYPOINT_NAMES", "LIMBS", "PART_NAMES", "SCORE_SCALES",
    "aligned_part_scores", "consistent_keypoints", "dtw", "dtw_path", "dtw_score", "interpolate_frames", "mirror_vectors", "normalize", "part_scores", "pose_scores",
    "score_from_distance", "search_topk", "subsequence_dtw",
]

from .detect import decode_poses, letterbox  # noqa: E402  (pose model pre- and post-processing)

__all__ += ["decode_poses", "letterbox"]
