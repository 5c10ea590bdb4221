"""posescore kernels: pure array math on NumPy (CPU) or CuPy (GPU) arrays.

One public function per operation; the backend follows the type of the arrays passed in.
"""

from .normalize import DEFAULT_MIN_CONFIDENCE, normalize
from .scoring import SCORE_SCALES, mirror_vectors, part_scores, pose_scores, score_from_distance
from .skeleton import KEYPOINT_NAMES, LIMBS, PART_NAMES

__all__ = [
    "DEFAULT_MIN_CONFIDENCE", "KEYPOINT_NAMES", "LIMBS", "PART_NAMES", "SCORE_SCALES",
    "mirror_vectors", "normalize", "part_scores", "pose_scores", "score_from_distance",
]
