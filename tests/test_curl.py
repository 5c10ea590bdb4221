"""model_repository/README.md's curl examples, run as written against a real server with HTTP on."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import random_poses
from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, TritonServer

README = DEFAULT_MODEL_REPOSITORY / "README.md"
#: The outputs each model's answer holds, in the README's order.
EXPECTED = [("pose", {"keypoints", "boxes", "scores", "count"}),
            ("landmarks", {"keypoints", "count", "landmarks", "world_landmarks", "pose_flags"}),
            ("score", {"scores", "part_scores"}),
            ("dtw", {"distance", "score", "part_scores", "mirrored", "path"}), ("search", {"scores", "video_names"}),
            ("live", {"events"})]


def curl_block() -> str:
    text = README.read_text()
    section = text[text.index("## Over HTTP with curl"):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_readmes_curl_examples_answer(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    from posescore.engine.archive import add_video

    root = tmp_path / "archives"
    poses = random_poses(np.random.default_rng(5), 30)
    add_video(root / "walks", "walk-1", "walk.mp4", poses, frames=np.arange(30), times=np.arange(30) / 30.0)
    with TritonServer(archive_root=root, http=True) as server:
        script = curl_block().replace("URL=localhost:8000", f"URL={server.http_url}")
        out = subprocess.run(["bash", "-c", "set -e\n" + script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(answers) == len(EXPECTED), out.stdout[:2000]
    for answer, (model, outputs) in zip(answers, EXPECTED):
        assert "error" not in answer, (model, answer)
        assert answer["model_name"] == model and outputs <= {o["name"] for o in answer["outputs"]}, answer
    scores = next(o for o in answers[2]["outputs"] if o["name"] == "scores")["data"]
    assert scores[0] == pytest.approx(100.0, abs=1e-3) and 50 < scores[1] < 100
    events = json.loads(answers[5]["outputs"][0]["data"][0])
    assert [e["event"] for e in events] == ["start", "frame", "end"]
