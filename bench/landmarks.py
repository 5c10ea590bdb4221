"""What the landmark model costs beside the pose model, per frame, on this machine:
``python -m bench.landmarks [--frames 32] [--rounds 3]``.

Real frames of Sports2D's demo (1768x994, two people) and of the walker alone (the clip's lower half),
in batches of 8: the pose model alone (``PoseDetector.detect``), then the landmarks of everyone it
found (``Landmarker.landmarks``: crops, BlazePose GHUM full, decoding), in turn, in one process.
Also the converter's agreement with LiteRT is a test (tests/test_landmarks.py), not a benchmark.
Nothing is asserted; the figures go to docs/BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from posescore.engine.media.samples import fetch_sports2d
from posescore.engine.media.video import iter_frames
from posescore.engine.serving.detector import pose_detector
from posescore.engine.serving.export import landmark_onnx_path, onnx_path
from posescore.engine.serving.landmarker import Landmarker


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime's intra-op threads of both (0: its default)")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; threads {args.threads}")
    frames = np.stack([f.rgb for _, f in zip(range(args.frames), iter_frames(fetch_sports2d(), start=2.0))])
    detector = pose_detector(str(onnx_path()), {}, threads=args.threads)
    landmarker = Landmarker(str(landmark_onnx_path()), threads=args.threads)
    cases = {"whole frame (two people)": frames,
             "the walker's half (one person)": np.ascontiguousarray(frames[:, frames.shape[1] // 2:])}
    for name, clip in cases.items():
        detector.detect(clip[:2])
        landmarker.warm_up()
        pose_times, mark_times, people = [], [], 0
        for _ in range(args.rounds):
            for start in range(0, len(clip), 8):
                batch = clip[start:start + 8]
                t0 = time.perf_counter()
                found = detector.detect(batch)
                t1 = time.perf_counter()
                landmarker.landmarks(batch, found.keypoints, found.boxes, found.counts)
                t2 = time.perf_counter()
                pose_times.append((t1 - t0) / len(batch))
                mark_times.append((t2 - t1) / len(batch))
                people += int(found.counts.sum())
        pose_ms, mark_ms = statistics.median(pose_times) * 1e3, statistics.median(mark_times) * 1e3
        per_frame = people / (args.rounds * len(clip))
        print(f"{name:32} {clip.shape[2]}x{clip.shape[1]}: pose {pose_ms:.1f} ms/frame, landmarks {mark_ms:.1f} "
              f"ms/frame ({per_frame:.1f} people a frame, {mark_ms / per_frame:.1f} ms a person): "
              f"+{100 * mark_ms / pose_ms:.0f}%")


if __name__ == "__main__":
    main()
