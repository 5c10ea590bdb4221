"""`index --ray` on a real local Ray (2 CPUs): the archive the single-process `index` makes, a
video that fails reported while the others go on, a second run that skips what is done, and a
pose worker SIGKILLed mid-video that loses and doubles nothing."""

import os
import signal

import numpy as np
import psutil
import pytest

from posescore.clients import PoseScoreClient
from posescore.engine.archive import open_archive
from posescore.engine.media.encode import retime_video
from posescore.engine.jobs.index import index_job
from posescore.engine.media.samples import SAMPLE_VIDEO, fetch_sports2d

ray = pytest.importorskip("ray")

FPS = 5.0


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three short clips of real video (vtest: several walkers; Sports2D: one person) and a file
    that is not a video."""
    folder = tmp_path_factory.mktemp("ray-videos")
    clips = [retime_video(SAMPLE_VIDEO, folder / "walkers.mp4", 1.0, start=2.0, duration=3.0),
             retime_video(SAMPLE_VIDEO, folder / "crossing.mp4", 1.0, start=20.0, duration=4.0),
             retime_video(fetch_sports2d(), folder / "athlete.mp4", 1.0, start=1.0, duration=2.0)]
    broken = folder / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    return [str(c) for c in clips], str(broken)


@pytest.fixture(scope="module")
def single_process(videos, triton_server, tmp_path_factory):
    """The archive of the single-process index, through the session's server."""
    root = tmp_path_factory.mktemp("single") / "archive"
    with PoseScoreClient(triton_server.grpc_url, timeout=120) as client:
        index_job(videos[0], root, client, fps=FPS)
    return _contents(root)


def _contents(root):
    """Every video of an archive: catalog fields that come from the video, and its columns."""
    archive = open_archive(root)
    out = {}
    for video in archive.videos:
        segment = archive.segment(video["segment"])
        rows = slice(video["first_row"], video["first_row"] + video["poses"])
        out[video["sha256"]] = {
            "fields": {k: video[k] for k in ("name", "fps", "width", "height", "frame_count", "poses")},
            **{name: np.asarray(segment.column(name)[rows]) for name in ("xy", "conf", "frames", "tracks", "times")}}
    return out


def _same(got, want, atol=0.0):
    assert sorted(got) == sorted(want)
    for vid in want:
        assert got[vid]["fields"] == want[vid]["fields"]
        for name in ("frames", "tracks", "times", "conf"):
            np.testing.assert_array_equal(got[vid][name], want[vid][name], err_msg=name)
        np.testing.assert_allclose(got[vid]["xy"], want[vid]["xy"], atol=atol, rtol=0)


def test_index_on_ray_through_the_server_is_the_single_process_archive(local_ray, videos, triton_server,
                                                                       single_process, tmp_path):
    from posescore.engine.jobs.index_ray import ray_index_job

    clips, broken = videos
    states = []
    result = ray_index_job([*clips, broken], tmp_path / "a", url=triton_server.grpc_url, workers=2, fps=FPS,
                           progress=states.append)
    assert [f["video"] for f in result["failed"]] == [broken] and "not a video" in result["failed"][0]["error"]
    assert [v["status"] for v in result["videos"]] == ["indexed"] * 3 + ["failed"]
    _same(_contents(tmp_path / "a"), single_process)
    assert result["frames"] == states[-1]["frames"] == sum(v["frames"] for v in result["videos"][:3])
    assert states[-1]["videos_done"] == states[-1]["videos"] == 4
    again = ray_index_job(clips, tmp_path / "a", url=triton_server.grpc_url, fps=FPS)
    assert [v["status"] for v in again["videos"]] == ["already indexed"] * 3 and again["frames"] == 0


def test_in_process_models_and_a_pose_worker_killed_mid_video(local_ray, videos, single_process, tmp_path):
    """No server: each actor runs the pose model itself, with the server model's parameters; one
    SIGKILLed mid-video is restarted by Ray Data and its batch retried: nothing lost or doubled."""
    from posescore.engine.jobs.index_ray import ray_index_job

    killed = []

    def kill_once(state):
        if killed or state["frames"] == 0 or state["videos_done"] > 0:
            return
        for process in psutil.process_iter(["cmdline"]):
            if "ray::MapWorker(Map(_PoseWorker))" in " ".join(process.info["cmdline"] or []):
                os.kill(process.pid, signal.SIGKILL)
                killed.append(process.pid)

    result = ray_index_job(videos[0], tmp_path / "a", fps=FPS, batch=4, progress=kill_once)  # batches mid-video
    assert killed, "no pose worker was running mid-video"
    assert result["failed"] == [] and [v["status"] for v in result["videos"]] == ["indexed"] * 3
    # The same model and code as the server's, in batches of 4 here: onnxruntime may round otherwise.
    _same(_contents(tmp_path / "a"), single_process, atol=0.05)
