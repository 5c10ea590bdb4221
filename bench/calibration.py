"""The score scale measured on real video: what compare's per-step distance is for the same movement
re-timed, and for what is not the movement (frozen, played backwards, another movement).

    python -m bench.calibration [--cache DIR] [--json FILE] [--3d]

Clips of vtest.avi (10 fps pedestrians) and of Sports2D's demo video (30 fps: a man on a box
raising his arms with a hop; over the whole video, a woman walking past is the main performer)
are re-timed with PyAV (``engine.media.encode.retime_video``), their poses come from the pose model on
the embedded server (cached), and each attempt is scored
by ``engine.analysis.answers.movement_score`` against its clip. Printed per clip and case: the RMS
per-step distance, the score on the old linear scale, and the score on the scale of
``kernels.score_from_distance``. With ``--3d``, the poses come from the landmarks model and each
pair is scored as ``compare --3d`` scores it (``engine.analysis.view.performers_in_3d``).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path.home() / ".cache" / "posescore-bench" / "calibration"
#: A clip whose performer the pose model finds in fewer of its frames than this is no performance
#: to score (reported as ``sparse``, left out of the summary).
MIN_VISIBLE = 0.5
SPEEDS = (0.5, 0.6, 0.8, 1.25, 1.7, 2.0)
#: (name, source, start s, seconds)
CLIPS = (
    ("vtest@20", "vtest", 20.0, 6.0),
    ("vtest@60", "vtest", 60.0, 6.0),
    ("vtest@40", "vtest", 40.0, 6.0),
    ("sports2d 0-4s", "sports2d", 0.0, 4.0),
    ("sports2d whole", "sports2d", 0.0, None),
)


def linear_score(distance: float) -> float:
    """The scale before calibration: 100 (1 - d / sqrt 2), clipped at 0."""
    return 100.0 * max(0.0, 1.0 - distance / math.sqrt(2.0))


def _source(name: str) -> Path:
    from posescore.engine.media.samples import SAMPLE_VIDEO, fetch_sports2d

    return SAMPLE_VIDEO if name == "vtest" else fetch_sports2d()


def clip_poses(cache: Path, client, source: str, start: float, seconds, speed: float, three_d: bool = False):
    """The poses (``VideoPoses``) of a clip re-timed to ``speed``, extracted once and cached (with
    the landmarks when ``three_d``)."""
    from posescore.engine.media.encode import retime_video
    from posescore.engine.jobs.extract import extract_poses

    key = f"{source}-{start:g}-{seconds}-{speed:g}"
    path = cache / f"{key}{'-landmarks' if three_d else ''}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())
    video = cache / f"{key}.mp4"
    if not video.exists():
        retime_video(_source(source), video, speed, start=start, duration=seconds)
    poses = extract_poses(video, client, landmarks=three_d)
    path.write_bytes(pickle.dumps(poses))
    return poses


def performer_frames(poses):
    """The main performer's pixel poses ``[F, 17, 3]`` (frames where present) and the fps."""
    from posescore.engine.analysis.people import main_performer

    performer = main_performer(poses)
    return performer.poses[performer.present], float(poses.info.fps)


def measure(cache: Path, three_d: bool = False) -> list[dict]:
    """One row per (clip, case): ``clip``, ``case``, ``kind`` (``same``: the movement re-timed;
    ``not``: frozen, backwards or another movement; ``walker``: another pedestrian of vtest.avi; ``sparse``: a clip
    whose performer is seen in fewer than MIN_VISIBLE of its frames), ``distance``, ``linear``, ``score``."""
    from posescore.clients import PoseScoreClient
    from posescore.engine.analysis.people import main_performer
    from posescore.engine.serving.server import TritonServer
    from posescore.engine.analysis.answers import movement_score
    from posescore.engine.analysis.view import performers_in_3d

    cache.mkdir(parents=True, exist_ok=True)
    poses: dict = {}
    models = ["pose", "landmarks"] if three_d else ["pose"]
    with TritonServer(models=models) as server, PoseScoreClient(server.grpc_url, timeout=600) as client:
        for name, source, start, seconds in CLIPS:
            for speed in (1.0, *SPEEDS):
                poses[name, speed] = clip_poses(cache, client, source, start, seconds, speed, three_d)
    rows = []
    visible = {}  # clip or case: the share of its frames that show the performer (the least of them)
    for name, *_ in CLIPS:
        visible[name] = min(float(main_performer(poses[name, s]).present.mean()) for s in (1.0, *SPEEDS))
        visible[f"vs {name}"] = visible[name]

    def add(clip, case, kind, reference, attempt):
        if three_d:  # (performer, fps) pairs, turned as compare --3d turns them
            (r_perf, r_fps), (a_perf, a_fps) = reference, attempt
            r_perf, a_perf = performers_in_3d(r_perf, a_perf)
            reference, attempt = (r_perf.poses[r_perf.present], r_fps), (a_perf.poses[a_perf.present], a_fps)
        scored = movement_score(*reference, *attempt)
        if min(visible[clip], visible.get(case, 1.0)) < MIN_VISIBLE:
            kind = "sparse"
        rows.append({"clip": clip, "case": case, "kind": kind, "distance": round(scored.distance, 4),
                     "linear": round(linear_score(scored.distance), 1), "score": round(scored.score, 1)})

    frames_of = performer_3d_frames if three_d else performer_frames
    for name, source, *_ in CLIPS:
        original = poses[name, 1.0]
        reference = frames_of(original)
        for speed in SPEEDS:
            add(name, f"{speed:g}x", "same", reference, frames_of(poses[name, speed]))
        add(name, "backwards", "not", reference, frames_of(original.reversed()))
        add(name, "frozen", "not", reference, frozen(reference, three_d))
        for other, other_source, *_ in CLIPS:
            if other_source != source:  # another movement
                add(name, f"vs {other}", "not", reference, frames_of(poses[other, 1.0]))
            elif other != name and source == "vtest":  # another walker: reported, not a bar
                add(name, f"vs {other}", "walker", reference, frames_of(poses[other, 1.0]))
    return rows


def performer_3d_frames(poses):
    """The main performer (a Performer, landmarks and world kept, frames where present) and the fps."""
    from posescore.engine.analysis.people import main_performer, performer_rows

    performer = main_performer(poses)
    return performer_rows(performer, np.flatnonzero(performer.present)), float(poses.info.fps)


def frozen(reference, three_d: bool):
    """The performer's middle pose held for the clip's length."""
    from dataclasses import replace

    performance, fps = reference
    if not three_d:
        return performance[[len(performance) // 2] * len(performance)], fps
    middle = [len(performance.present) // 2] * len(performance.present)
    return replace(performance, poses=performance.poses[middle], landmarks=performance.landmarks[middle],
                   world=performance.world[middle]), fps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--3d", dest="three_d", action="store_true", help="score as compare --3d does")
    args = parser.parse_args(argv)
    rows = measure(args.cache, args.three_d)
    print(f"{'clip':16} {'case':22} {'kind':7} {'distance':>8} {'linear':>7} {'score':>6}")
    for r in rows:
        print(f"{r['clip']:16} {r['case']:22} {r['kind']:7} {r['distance']:8.4f} {r['linear']:7.1f} {r['score']:6.1f}")
    same = [r for r in rows if r["kind"] == "same"]
    other = [r for r in rows if r["kind"] == "not"]
    print(f"same movement: distance {min(r['distance'] for r in same):.4f}-{max(r['distance'] for r in same):.4f}, "
          f"score >= {min(r['score'] for r in same):.1f}; not the movement: distance >= "
          f"{min(r['distance'] for r in other):.4f}, score <= {max(r['score'] for r in other):.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
