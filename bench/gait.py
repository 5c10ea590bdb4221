"""Gait's invariances on real video, end to end: ``python -m bench.gait [--fps 30]``.

Sports2D's walker (1.3 to 7.0 s of its demo, 884 px wide) as filmed, re-timed to 0.5x with PyAV
(``engine.media.encode.retime_video``: every frame shown twice) and mirrored, each through the pose
and landmarks models on the embedded server and ``posescore gait``'s analysis. Printed: cadence,
contact, step and stride times, double support, overstride per version and the ratios the
invariances promise (0.5x: half the cadence, twice the times; mirrored: left and right swapped).
Nothing is asserted; the figures go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from posescore.clients import PoseScoreClient
from posescore.engine.analysis.gait import GaitInput, analyse_gait
from posescore.engine.analysis.people import parse_person, person_by_spec, track_people
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.media.encode import retime_video, write_video
from posescore.engine.media.samples import fetch_sports2d
from posescore.engine.media.video import iter_frames
from posescore.engine.serving.server import TritonServer

START, DURATION = 1.3, 5.7


def _gait(poses, at: float):
    performer = person_by_spec(poses, track_people(poses), parse_person(f"0,250,884,497@{at:g}"), source="bench")
    return analyse_gait(GaitInput(poses.times, performer.present, performer.landmarks, performer.world,
                                  poses.info.width, poses.info.height, "bench"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=None, help="sampling of the original (default: every frame)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, TritonServer(models=["pose", "landmarks"]) as server, \
            PoseScoreClient(server.grpc_url, timeout=600) as client:
        folder = Path(tmp)
        walk = write_video(folder / "walk.mp4", (f.rgb for f in iter_frames(
            fetch_sports2d(), start=START, duration=DURATION, max_side=884)), 30)
        slow = retime_video(walk, folder / "slow.mp4", 0.5)
        mirrored = write_video(folder / "mirrored.mp4", (np.ascontiguousarray(f.rgb[:, ::-1])
                                                         for f in iter_frames(walk)), 30)
        results = {}
        for name, video, at, fps in (("as filmed", walk, 3, args.fps), ("0.5x", slow, 6, args.fps),
                                     ("mirrored", mirrored, 3, args.fps)):
            results[name] = _gait(extract_poses(video, client, fps=fps, landmarks=True), at)
        names = ("cadence_steps_per_min", "contact_time_s", "step_time_s", "stride_time_s", "double_support_s",
                 "overstride_cm")
        for name, result in results.items():
            s = result.summary
            print(f"{name:10} steps {s['steps']}: " + ", ".join(
                f"{n} {s[n] if n == 'cadence_steps_per_min' else s[n]['mean']}" for n in names))
        base, slow_s, mirror_s = (results[k].summary for k in ("as filmed", "0.5x", "mirrored"))
        print("0.5x / as filmed: cadence %.4f (0.5), contact %.4f (2), step %.4f (2), stride %.4f (2)" % (
            slow_s["cadence_steps_per_min"] / base["cadence_steps_per_min"],
            slow_s["contact_time_s"]["mean"] / base["contact_time_s"]["mean"],
            slow_s["step_time_s"]["mean"] / base["step_time_s"]["mean"],
            slow_s["stride_time_s"]["mean"] / base["stride_time_s"]["mean"]))
        for figure in ("contact_time_s", "step_time_s", "overstride_cm"):
            print(f"mirrored {figure}: left {mirror_s[figure]['left']} (as filmed right {base[figure]['right']}), "
                  f"right {mirror_s[figure]['right']} (as filmed left {base[figure]['left']})")


if __name__ == "__main__":
    main()
