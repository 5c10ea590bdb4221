"""``posescore pose``: every person in every frame, as AlphaPose / COCO results records."""

from __future__ import annotations

from pathlib import Path

from posescore.engine.analysis.people import track_people
from posescore.engine.jobs.inputs import Progress, load_poses
from posescore.engine.media.pose_files import to_alphapose, write_alphapose


def pose_job(source, client, out: str | Path | None = None, fps: float | None = None,
             progress: Progress | None = None) -> list[dict]:
    """AlphaPose / COCO results records of every person in ``source``; written to ``out`` if given.
    Each record's ``idx`` is its person's track id (``analysis.people.track_people``; in an image,
    the person's index): the id ``compare``, ``reps`` and ``find`` take with ``--person`` for the
    same file sampled at the same ``fps``."""
    poses = load_poses(source, client, fps=fps, progress=progress)
    records = to_alphapose(poses, track_people(poses))
    if out:
        write_alphapose(out, records)
    return records
