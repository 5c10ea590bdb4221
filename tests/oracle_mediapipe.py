"""MediaPipe's own BlazePose as a test oracle, run in its own virtual environment (``.venv-oracle``,
``make oracle``: mediapipe 0.10.21 needs protobuf below 5, Triton's client 5 or more).

Run as a script by that environment's Python (:func:`run_oracle` does it from the tests):

- ``litert MODEL.tflite CROPS.npy OUT.npz``: the TFLite model in the LiteRT interpreter
  (``ai-edge-litert``) on each crop ``[N, 256, 256, 3]`` float32; OUT holds each output by name.
- ``solution FRAMES.npy OUT.npz``: mediapipe's pose solution (static images, model complexity 1:
  BlazePose GHUM full, its own detector) on each uint8 RGB frame ``[N, H, W, 3]``; OUT holds
  ``landmarks [N, 33, 5]`` (pixels, z on x's scale, visibility, presence) and ``world [N, 33, 3]``
  (metres), NaN for a frame where it found no one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ORACLE_PYTHON = Path(__file__).resolve().parent.parent / ".venv-oracle" / "bin" / "python"


def run_oracle(*args: str, timeout: float = 300) -> None:
    """This script under the oracle environment's Python; raises with its stderr on failure."""
    done = subprocess.run([str(ORACLE_PYTHON), __file__, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"oracle {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")


def _litert(model: str, crops_file: str, out: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    outputs = {d["name"]: d for d in interpreter.get_output_details()}
    results: dict[str, list] = {name: [] for name in outputs}
    for crop in np.load(crops_file):
        interpreter.set_tensor(source["index"], crop[None].astype(np.float32))
        interpreter.invoke()
        for name, detail in outputs.items():
            results[name].append(interpreter.get_tensor(detail["index"])[0].copy())
    np.savez(out, **{name: np.stack(values) for name, values in results.items()})


def _solution(frames_file: str, out: str) -> None:
    import mediapipe as mp

    frames = np.load(frames_file)
    marks = np.full((len(frames), 33, 5), np.nan)
    world = np.full((len(frames), 33, 3), np.nan)
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        for n, frame in enumerate(frames):
            height, width = frame.shape[:2]
            found = pose.process(np.ascontiguousarray(frame))
            if found.pose_landmarks is None:
                continue
            marks[n] = [[p.x * width, p.y * height, p.z * width, p.visibility, p.presence]
                        for p in found.pose_landmarks.landmark]
            world[n] = [[p.x, p.y, p.z] for p in found.pose_world_landmarks.landmark]
    np.savez(out, landmarks=marks, world=world)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    {"litert": _litert, "solution": _solution}[command](*rest)
