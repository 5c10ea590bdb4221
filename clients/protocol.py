"""What the sync and asyncio clients share: the error type, the result types, input validation,
and one request builder / response parser per model (plain functions, no I/O).

A builder validates its arguments *before* anything is sent and returns the inputs of one or more
requests; a parser turns the responses of those requests into one typed result. Tensor names,
dtypes and shapes are those of ``model_repository/<model>/config.pbtxt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from tritonclient.grpc import InferenceServerException, InferInput, InferResult

from posescore.kernels import METRICS
from posescore.kernels.skeleton import NUM_KEYPOINTS, NUM_PARTS, PART_NAMES

#: ``max_batch_size`` of model_repository/pose/config.pbtxt: frames per pose request.
POSE_MAX_BATCH = 16
#: Candidates per score request by default (65536 poses are 13 MB of float32).
DEFAULT_MAX_CANDIDATES = 65536


class PoseScoreError(ValueError):
    """Everything a posescore client raises: a bad argument (found before any request is sent) or
    an error from the server or the connection.

    ``status`` is the gRPC status code name (e.g. ``"UNAVAILABLE"``, ``"INVALID_ARGUMENT"``), None
    for client-side validation errors; ``model`` the model the call was for, when there was one.
    """

    def __init__(self, message: str, *, status: str | None = None, model: str | None = None):
        super().__init__(message)
        self.status = status
        self.model = model


def server_error(model: str | None, error: InferenceServerException, note: str = "") -> PoseScoreError:
    """A PoseScoreError carrying the server's message, the gRPC status code and the model name."""
    status = status_name(error)
    where = f"model {model!r}" if model else "server"
    message = f"{where}: {error.message() or error} [{status or 'no status'}]{note}"
    return PoseScoreError(message, status=status, model=model)


def not_ready(error: InferenceServerException, why: str = "the server is not ready yet") -> InferenceServerException:
    """A NOT_FOUND answer ("no available versions") from a server that is not ready, i.e. still
    loading its models, or about a model it is reloading: UNAVAILABLE, to be retried."""
    return InferenceServerException(f"{error.message()} ({why})",
                                    status="StatusCode.UNAVAILABLE")


def stub_died(error: InferenceServerException) -> InferenceServerException | None:
    """An INTERNAL answer saying the model's python stub is not healthy (killed, or out of memory)
    as UNAVAILABLE, to be retried: a supervised server reloads the model (``engine.serving.supervisor``);
    None for any other error."""
    message = error.message() or ""
    if status_name(error) == "INTERNAL" and "Stub process" in message and "not healthy" in message:
        return InferenceServerException(f"{message} (the model is being reloaded)", status="StatusCode.UNAVAILABLE")
    return None


def status_name(error: InferenceServerException) -> str | None:
    """``"UNAVAILABLE"`` from tritonclient's ``"StatusCode.UNAVAILABLE"``."""
    status = error.status()
    return status.rsplit(".", 1)[-1] if status else None


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FramePeople:
    """The people detected in one frame: ``keypoints [n, 17, 3]`` float32 (pixel x, y, confidence),
    ``boxes [n, 4]`` float32, ``scores [n]`` float32."""

    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class PoseResult:
    """Pose model output for B frames, padded to P people per frame: ``keypoints [B, P, 17, 3]``
    float32, ``boxes [B, P, 4]`` float32, ``scores [B, P]`` float32 and ``counts [B]`` int32 (the
    number of real people in each frame; rows past it are padding)."""

    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def frame(self, index: int) -> FramePeople:
        """Frame ``index``'s people, trimmed to its count."""
        n = int(self.counts[index])
        return FramePeople(self.keypoints[index, :n], self.boxes[index, :n], self.scores[index, :n])

    def frames(self) -> list[FramePeople]:
        """Every frame's people, trimmed to its count, in frame order."""
        return [self.frame(i) for i in range(len(self))]


@dataclass(frozen=True)
class ScoreResult:
    """``scores [N]`` float32 0-100 of each candidate against the query, ``part_scores [N, 6]``
    float32 0-100 (kernels.PART_NAMES order), NaN where a part could not be scored (no limb of it
    seen in both poses): :attr:`part_valid` is the mask, :meth:`parts` a candidate's as a dict
    with None there."""

    scores: np.ndarray
    part_scores: np.ndarray

    @property
    def part_valid(self) -> np.ndarray:
        """``[N, 6]`` bool: the part could be scored."""
        return np.isfinite(self.part_scores)

    def parts(self, candidate: int) -> dict[str, float | None]:
        """``{part: score or None}`` of one candidate (None: not scored)."""
        return _parts(self.part_scores[candidate])


@dataclass(frozen=True)
class DtwResult:
    """DTW of a reference and an attempt: ``distance`` (root of the path's summed squared costs),
    ``score`` 0-100, ``part_scores [6]`` float32 along the path (NaN for a part not scored:
    :attr:`part_valid`, :meth:`parts`), ``mirrored`` (the mirrored attempt
    matched better), ``path [L, 2]`` int32 of (reference index, attempt index) or None when not
    requested."""

    distance: float
    score: float
    part_scores: np.ndarray
    mirrored: bool
    path: np.ndarray | None

    @property
    def part_valid(self) -> np.ndarray:
        """``[6]`` bool: the part could be scored (seen in both along the path)."""
        return np.isfinite(self.part_scores)

    def parts(self) -> dict[str, float | None]:
        """``{part: score or None}`` (None: not scored)."""
        return _parts(self.part_scores)


@dataclass(frozen=True)
class SearchMatch:
    """One archive hit (frames inclusive; ``track`` -1 when unknown; ``score`` 0-100; a pose
    query's hit is one moment: start and end are its frame)."""

    video_id: str
    video_name: str
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    track: int
    score: float
    video_path: str = ""


# -- validation ----------------------------------------------------------------------------------
def _host_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
        value = value.get()  # a CuPy array: one copy to the host
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise PoseScoreError(f"{name}: expected an array, got {type(value).__name__} ({err})") from None


def check_poses(value: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``value`` as C-contiguous float32 poses ``[17, 3]`` (ndim 2) or ``[N, 17, 3]`` (ndim 3) with
    N >= 1; raises PoseScoreError naming ``name`` otherwise. NaN passes (the server refuses it)."""
    array = _host_array(value, name)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    expected = " or ".join("[17, 3]" if n == 2 else "[N, 17, 3]" for n in ndims)
    if array.dtype.kind not in "iuf":
        raise PoseScoreError(f"{name}: expected float32 poses {expected}, got dtype {array.dtype}")
    if array.ndim not in ndims or array.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise PoseScoreError(f"{name}: expected poses {expected}, got shape {list(array.shape)}")
    if array.ndim == 3 and array.shape[0] == 0:
        raise PoseScoreError(f"{name}: expected at least one pose [N >= 1, 17, 3], got shape {list(array.shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_frames(value: Any) -> np.ndarray:
    """``value`` as C-contiguous uint8 RGB frames ``[B, H, W, 3]`` (one ``[H, W, 3]`` frame gets B=1)."""
    frames = _host_array(value, "frames")
    if frames.dtype != np.uint8:
        raise PoseScoreError(f"frames: expected dtype uint8, got {frames.dtype}")
    if frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise PoseScoreError(f"frames: expected RGB frames [H, W, 3] or [B, H, W, 3], got shape {list(frames.shape)}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise PoseScoreError(f"frames: expected at least one frame of at least 1x1 pixels, got shape "
                             f"{list(frames.shape)}")
    return np.ascontiguousarray(frames)


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise PoseScoreError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise PoseScoreError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise PoseScoreError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


# -- tensors -------------------------------------------------------------------------------------
def input_tensor(name: str, array: np.ndarray, datatype: str) -> InferInput:
    """An input named ``name`` holding ``array`` as Triton's ``datatype`` (``FP32``, ``UINT8``, ...)."""
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _bool(name: str, value: bool) -> InferInput:
    return input_tensor(name, np.array([value], np.bool_), "BOOL")


def _output(result: InferResult, name: str) -> np.ndarray:
    array = result.as_numpy(name)
    if array is None:
        raise PoseScoreError(f"the server's response has no output {name!r}", status="INTERNAL")
    return array


def _parts(scores: np.ndarray) -> dict[str, float | None]:
    return {name: (float(s) if np.isfinite(s) else None) for name, s in zip(PART_NAMES, scores)}


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


# -- one builder and one parser per model --------------------------------------------------------
def pose_requests(frames: Any, batch: int = POSE_MAX_BATCH) -> list[list[InferInput]]:
    """Inputs of the pose requests for ``frames`` (uint8 [H, W, 3] or [B, H, W, 3]), ``batch``
    frames at most per request, in frame order."""
    frames = check_frames(frames)
    return [[input_tensor("frames", frames[i:i + batch], "UINT8")] for i in range(0, len(frames), batch)]


def pose_result(results: Sequence[InferResult]) -> PoseResult:
    """One PoseResult from the pose responses in order (chunks padded to a common P)."""
    chunks = [(_output(r, "keypoints"), _output(r, "boxes"), _output(r, "scores"), _output(r, "count"))
              for r in results]
    people = max(c[0].shape[1] for c in chunks)

    def padded(array: np.ndarray) -> np.ndarray:
        pad = [(0, 0), (0, people - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, pad) if array.shape[1] < people else array

    return PoseResult(keypoints=_concat([padded(c[0]) for c in chunks]),
                      boxes=_concat([padded(c[1]) for c in chunks]),
                      scores=_concat([padded(c[2]) for c in chunks]),
                      counts=_concat([c[3].reshape(-1) for c in chunks]).astype(np.int32))


@dataclass(frozen=True)
class LandmarkResult(PoseResult):
    """The ``landmarks`` model's output for B frames: the pose model's (:class:`PoseResult`) and,
    for each person, ``landmarks [B, P, 33, 5]`` float32 (BlazePose GHUM's 33 landmarks: x, y, z
    in pixels, visibility and presence 0-1), ``world [B, P, 33, 3]`` float32 (metres from the
    hips' midpoint, y down) and ``flags [B, P]`` float32 (the model's confidence that a body is
    there; 0 for padding)."""

    landmarks: np.ndarray = None
    world: np.ndarray = None
    flags: np.ndarray = None


def landmark_result(results: Sequence[InferResult]) -> LandmarkResult:
    """One LandmarkResult from the landmarks responses in order (chunks padded to a common P)."""
    poses = pose_result(results)
    people = poses.keypoints.shape[1]

    def padded(array: np.ndarray) -> np.ndarray:
        pad = [(0, 0), (0, people - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, pad) if array.shape[1] < people else array

    return LandmarkResult(poses.keypoints, poses.boxes, poses.scores, poses.counts,
                          landmarks=_concat([padded(_output(r, "landmarks")) for r in results]),
                          world=_concat([padded(_output(r, "world_landmarks")) for r in results]),
                          flags=_concat([padded(_output(r, "pose_flags")) for r in results]))


def score_requests(query: Any, candidates: Any, metric: str, mirror: bool, chunk: int) -> list[list[InferInput]]:
    """Inputs of the score requests: ``query [17, 3]`` against ``candidates [N, 17, 3]``, ``chunk``
    candidates at most per request. The score model batches requests, so each tensor carries a
    batch dimension of 1 (one question a request): ``query [1, 17, 3]``, ``candidates [1, n, 17, 3]``,
    ``metric [1, 1]``, ``mirror [1, 1]``."""
    query = check_poses(query, "query", 2)
    candidates = check_poses(candidates, "candidates", 3)
    if metric not in METRICS:
        raise PoseScoreError(f"metric: expected one of {METRICS}, got {metric!r}")
    mirror = check_bool(mirror, "mirror")
    shared = [input_tensor("query", query[None], "FP32"),
              input_tensor("metric", np.array([[metric.encode()]], np.object_), "BYTES"),
              input_tensor("mirror", np.array([[mirror]], np.bool_), "BOOL")]
    return [[input_tensor("candidates", candidates[None, i:i + chunk], "FP32"), *shared]
            for i in range(0, len(candidates), chunk)]


def score_result(results: Sequence[InferResult]) -> ScoreResult:
    return ScoreResult(scores=_concat([_output(r, "scores").reshape(-1) for r in results]),
                       part_scores=_concat([_output(r, "part_scores").reshape(-1, NUM_PARTS) for r in results]))


def dtw_request(reference: Any, attempt: Any, window: int | None, mirror: bool, return_path: bool) -> list[InferInput]:
    """Inputs of one dtw request: ``reference [T, 17, 3]``, ``attempt [U, 17, 3]``."""
    inputs = [input_tensor("reference", check_poses(reference, "reference", 3), "FP32"),
              input_tensor("attempt", check_poses(attempt, "attempt", 3), "FP32"),
              _bool("mirror", check_bool(mirror, "mirror")),
              _bool("return_path", check_bool(return_path, "return_path"))]
    if window is not None:
        inputs.append(input_tensor("window", np.array([check_int(window, "window", 1)], np.int32), "INT32"))
    return inputs


def dtw_result(result: InferResult, return_path: bool) -> DtwResult:
    return DtwResult(distance=float(_output(result, "distance").reshape(-1)[0]),
                     score=float(_output(result, "score").reshape(-1)[0]),
                     part_scores=_output(result, "part_scores").reshape(NUM_PARTS),
                     mirrored=bool(_output(result, "mirrored").reshape(-1)[0]),
                     path=_output(result, "path").reshape(-1, 2) if return_path else None)


def search_request(archive: str | os.PathLike, query: Any, k: int, *, fps: float | None = None,
                   min_gap: float | None = None, video: str | None = None, start: float | None = None,
                   end: float | None = None, min_score: float | None = None, shard: str | None = None,
                   phase: str | None = None, count: int | None = None, candidates: Any = None,
                   candidate_costs: Any = None) -> list[InferInput]:
    """Inputs of one search request: ``archive`` (a folder under the server's archive root),
    ``query [17, 3]`` (a pose) or ``[M, 17, 3]`` (a movement filmed at ``fps``), ``k >= 1``; a
    pose's hits closer than ``min_gap`` seconds in one video and track are one moment; a
    movement's hits under ``min_score`` are dropped; ``video`` (a glob of names or paths) and
    ``start`` / ``end`` (seconds) filter the hits. A merge over shards (``engine.archive.sharded``) also
    sends ``shard`` ("I/N"), ``phase``, ``count``, and for phase "clip_score" the DTW
    ``candidates [C, 3]`` (segment, first row, last row) with their ``candidate_costs [C]``."""
    if not isinstance(archive, (str, os.PathLike)) or not os.fspath(archive):
        raise PoseScoreError(f"archive: expected a non-empty path, got {archive!r}")
    query = check_poses(query, "query", (2, 3)).reshape(-1, NUM_KEYPOINTS, 3)
    inputs = [input_tensor("archive", np.array([os.fsencode(archive)], np.object_), "BYTES"),
              input_tensor("query", query, "FP32"),
              input_tensor("k", np.array([check_int(k, "k", 1)], np.int32), "INT32")]
    for name, value in (("fps", fps), ("min_gap", min_gap), ("start", start), ("end", end),
                        ("min_score", min_score)):
        if value is not None:
            inputs.append(input_tensor(name, np.array([value], np.float32), "FP32"))
    for name, value in (("video", video), ("shard", shard), ("phase", phase)):
        if value is not None:
            inputs.append(input_tensor(name, np.array([str(value).encode()], np.object_), "BYTES"))
    if count is not None:
        inputs.append(input_tensor("count", np.array([check_int(count, "count", 1)], np.int64), "INT64"))
    if candidates is not None:
        rows = np.asarray(candidates, np.int64).reshape(-1, 3)
        costs = np.asarray(candidate_costs, np.float32).reshape(-1)
        if costs.shape[0] != rows.shape[0]:
            raise PoseScoreError(f"candidate_costs: expected one per candidate ({rows.shape[0]}), got {costs.shape[0]}")
        inputs += [input_tensor("candidates", rows, "INT64"), input_tensor("candidate_costs", costs, "FP32")]
    return inputs


@dataclass
class SearchPart:
    """What one server answers for a merge of shards: ``hits`` (dicts as ``engine.archive.search`` makes
    them: ``video_id``, ``video``, ``path``, ``track``, ``start_frame``, ``end_frame``,
    ``start_time``, ``end_time``, ``score``, and ``segment``, ``row``, ``last_row``, ``key``,
    ``cost``), the poses it searched (-1: not counted), its ``shard`` ("I/N", "" whole) and the
    catalog ``generation`` it read."""

    hits: list
    searched: int
    shard: str
    generation: int


def search_part(result: InferResult) -> SearchPart:
    ids, names, paths = (_decode(_output(result, name)) for name in ("video_ids", "video_names", "video_paths"))
    ints = {name: _output(result, name) for name in ("start_frames", "end_frames", "tracks", "segments", "rows",
                                                     "last_rows")}
    floats = {name: _output(result, name) for name in ("start_times", "end_times", "scores", "keys", "costs")}
    hits = [{"video_id": ids[i], "video": names[i], "path": paths[i] or None, "track": int(ints["tracks"][i]),
             "start_frame": int(ints["start_frames"][i]), "end_frame": int(ints["end_frames"][i]),
             "start_time": float(floats["start_times"][i]), "end_time": float(floats["end_times"][i]),
             "score": float(floats["scores"][i]), "segment": int(ints["segments"][i]), "row": int(ints["rows"][i]),
             "last_row": int(ints["last_rows"][i]), "key": float(floats["keys"][i]), "cost": float(floats["costs"][i])}
            for i in range(len(ids))]
    return SearchPart(hits, int(_output(result, "searched")[0]), _decode(_output(result, "searched_shard"))[0],
                      int(_output(result, "generation")[0]))


def search_result(result: InferResult) -> list[SearchMatch]:
    columns = [_output(result, name) for name in ("video_ids", "video_names", "start_frames", "end_frames",
                                                  "start_times", "end_times", "tracks", "scores", "video_paths")]
    ids, names, paths = _decode(columns[0]), _decode(columns[1]), _decode(columns[8])
    return [SearchMatch(ids[i], names[i], int(columns[2][i]), int(columns[3][i]), float(columns[4][i]),
                        float(columns[5][i]), int(columns[6][i]), float(columns[7][i]), paths[i])
            for i in range(len(ids))]
