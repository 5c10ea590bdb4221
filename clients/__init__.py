"""Typed gRPC clients over tritonclient for the models in model_repository/ (pose, score, dtw, search).

``PoseScoreClient`` blocks, ``AsyncPoseScoreClient`` is its asyncio twin; both raise only
``PoseScoreError``. See clients/triton.py.
"""

from posescore.clients.protocol import (DEFAULT_MAX_CANDIDATES, POSE_MAX_BATCH, DtwResult, FramePeople, PoseResult,
                                        PoseScoreError, ScoreResult, SearchMatch)
from posescore.clients.triton import AsyncPoseScoreClient, PoseScoreClient

__all__ = [
    "DEFAULT_MAX_CANDIDATES", "POSE_MAX_BATCH", "AsyncPoseScoreClient", "DtwResult", "FramePeople", "PoseResult",
    "PoseScoreClient", "PoseScoreError", "ScoreResult", "SearchMatch",
]
