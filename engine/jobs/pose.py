"""``posescore pose``: every person in every frame, as AlphaPose / COCO results records, and a
contact sheet of the tracks to choose a performer from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posescore.engine.analysis.people import track_people
from posescore.engine.jobs.inputs import FrameCursor, Progress, load_poses
from posescore.engine.media.pose_files import is_poses_json, to_alphapose, write_alphapose
from posescore.engine.poses import VideoPoses
from posescore.engine.reports.render import person_thumbnail, write_image

#: Most tracks a contact sheet shows (the longest), and its columns.
SHEET_TRACKS, SHEET_COLUMNS = 24, 4


def pose_job(source, client, out: str | Path | None = None, fps: float | None = None,
             progress: Progress | None = None, sheet: str | Path | None = None, landmarks: bool = False,
             trc: str | Path | None = None, markers: str = "pose2sim") -> list[dict]:
    """AlphaPose / COCO results records of every person in ``source``; written to ``out`` if given.
    Each record's ``idx`` is its person's track id (``analysis.people.track_people``; in an image,
    the person's index): the id ``compare``, ``reps`` and ``find`` take with ``--person`` for the
    same file sampled at the same ``fps``. With ``sheet`` (a video or image, not a pose JSON), a
    PNG with a frame of each track, its person boxed and its id written (:func:`write_track_sheet`).
    With ``landmarks``, each record also carries BlazePose GHUM's 33 landmarks and world
    coordinates (the ``landmarks`` model); with ``trc`` too, the main performer's world landmarks
    are written there for OpenSim (``media.opensim.write_trc``, ``markers`` pose2sim or opencap)."""
    poses = load_poses(source, client, fps=fps, progress=progress, landmarks=landmarks or trc is not None)
    tracks = track_people(poses)
    if trc is not None:
        write_performer_trc(trc, poses, tracks, markers)
    records = to_alphapose(poses, tracks)
    if out:
        write_alphapose(out, records)
    if sheet and not is_poses_json(source) and len(records):
        write_track_sheet(sheet, source, poses, tracks, fps)
    return records


def write_performer_trc(path: str | Path, poses: VideoPoses, tracks: np.ndarray, markers: str = "pose2sim") -> Path:
    """``path``: the world landmarks of ``poses``' performer (``analysis.people.most_moving_performer``:
    the person who moves most, as reps chooses the reference's) as a ``.trc``; frames where the
    performer is missing are written empty."""
    from posescore.engine.analysis.people import most_moving_performer
    from posescore.engine.media.opensim import write_trc

    performer = most_moving_performer(poses, tracks, option="--person")
    world = np.where(performer.present[:, None, None], performer.world, np.nan)
    return write_trc(path, poses.times, world, markers=markers)


def write_track_sheet(path: str | Path, source, poses: VideoPoses, tracks: np.ndarray, fps: float | None = None) -> Path:
    """``path`` (PNG): for each of the SHEET_TRACKS longest tracks, the frame where its box is
    largest, the person boxed and ``track N, F frames, from T s`` written; in columns of
    SHEET_COLUMNS, by track id."""
    rows, people = np.nonzero(tracks >= 0)
    ids, counts = np.unique(tracks[rows, people], return_counts=True)
    chosen = sorted(ids[np.argsort(-counts, kind="stable")][:SHEET_TRACKS].tolist())
    best = {}
    for track in chosen:
        where = np.flatnonzero(tracks[rows, people] == track)
        boxes = poses.boxes[rows[where], people[where]]
        n = where[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]
        best[track] = (int(rows[n]), poses.boxes[rows[n], people[n]], len(where), float(poses.times[rows[where[0]]]))
    cursor = FrameCursor(source, poses.info, fps)
    tiles = {}
    for track, (row, box, frames, first) in sorted(best.items(), key=lambda item: item[1][0]):  # frames in order
        tiles[track] = person_thumbnail(cursor.get(int(poses.frame_indices[row])), box,
                                        f"track {track}, {frames} frames, from {first:.1f} s")
    tile_h = max(t.shape[0] for t in tiles.values())
    tiles = [np.pad(tiles[t], ((0, tile_h - tiles[t].shape[0]), (0, 0), (0, 0))) for t in chosen]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % SHEET_COLUMNS)
    grid = np.concatenate([np.concatenate(tiles[i:i + SHEET_COLUMNS], axis=1)
                           for i in range(0, len(tiles), SHEET_COLUMNS)], axis=0)
    return write_image(path, grid)
