"""``posescore gait``: a runner's or walker's gait from a side-view video (or a pose JSON written by
``posescore pose --landmarks``): foot contacts and per-step figures (``engine.analysis.gait``), and
with ``out`` gait.json, gait.png, an annotated video, report.html, OpenSim angles (.mot) and the
landmarks (poses.json, to run again without the server).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posescore.engine.analysis.gait import GaitError, GaitInput, analyse_gait, check_options
from posescore.engine.analysis.people import most_moving_performer, parse_person, person_by_spec, track_people
from posescore.engine.jobs.inputs import Progress, load_poses
from posescore.engine.media.pose_files import is_poses_json, json_text, write_alphapose


def gait_job(source, client, *, height: float | None = None, treadmill_kmh: float | None = None,
             person=None, out: str | Path | None = None, csv: str | Path | None = None, fps: float | None = None,
             progress: Progress | None = None, video: bool = True) -> dict:
    """gait.json's content for the performer of ``source`` (``person`` a spec as ``--person``;
    auto: the one who moves most). Writes the outputs to ``out`` and the steps to ``csv`` when
    given. A :class:`GaitError` names what is wrong; with ``out``, the landmarks are written first
    (``poses.json``) and the error with what was found (``gait.json``), so nothing is lost."""
    check_options(height, treadmill_kmh)
    folder = Path(out) if out else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    poses = load_poses(source, client, fps=fps, progress=progress, landmarks=True)
    if folder is not None and not is_poses_json(source):
        write_alphapose(folder / "poses.json", poses)
    if not len(poses) or not poses.counts.any():
        raise GaitError(f"{source}: no one is seen in any frame")
    tracks = track_people(poses)
    spec = parse_person(person, "--person")
    performer = (most_moving_performer(poses, tracks, option="--person") if spec.auto
                 else person_by_spec(poses, tracks, spec, option="--person", source=str(source)))
    gait = GaitInput(times=poses.times, present=performer.present, landmarks=performer.landmarks,
                     world=performer.world, width=poses.info.width, height=poses.info.height, source=str(source))
    head = {"source": str(source), "person": {"track": performer.track, "choice": performer.choice},
            "frames": len(poses), "fps": poses.rate, "height_m": height, "treadmill_kmh": treadmill_kmh}
    try:
        result = analyse_gait(gait, height=height, treadmill_kmh=treadmill_kmh)
    except GaitError as err:
        if folder is not None:
            (folder / "gait.json").write_text(json_text({**head, "error": str(err), "partial": err.partial},
                                                        indent=2) + "\n")
        raise
    report = {**head, **result.report()}
    if csv:
        write_gait_csv(csv, result.steps)
    if folder is not None:
        report["outputs"] = write_gait_outputs(folder, source, poses, performer, result, report, video=video)
        (folder / "gait.json").write_text(json_text(report, indent=2) + "\n")
    return report


def write_gait_outputs(folder: Path, source, poses, performer, result, report: dict, *, video: bool = True) -> dict:
    """gait.png, angles.mot (the knees' and hips' flexions in 3-D), the annotated video gait.mp4
    (unless ``video`` is False or the source is a pose JSON) and report.html in ``folder``; their
    paths."""
    from posescore.engine.media.encode import write_video
    from posescore.engine.media.opensim import write_mot
    from posescore.engine.media.video import iter_frames
    from posescore.engine.reports.gait_report import draw_gait_frame, in_contact, plot_gait, write_gait_page
    from posescore.kernels.skeleton import JOINT_NAMES, world_joint_angles

    outputs = {"plot": str(plot_gait(folder / "gait.png", poses.times, result))}
    angles = world_joint_angles(performer.world)
    flexions = {f"{name}_flexion": np.where(performer.present, angles[:, JOINT_NAMES.index(name)], np.nan)
                for name in ("left_knee", "right_knee", "left_hip", "right_hip")}
    outputs["mot"] = str(write_mot(folder / "angles.mot", poses.times, flexions, name="posescore gait"))
    if video and not is_poses_json(source):
        rows = {int(index): row for row, index in enumerate(poses.frame_indices)}

        def frames():
            row = None
            for frame in iter_frames(source):
                # Sampled with --fps: a frame between two sampled ones shows the last one's landmarks.
                row = rows.get(frame.index, row)
                image = frame.rgb.copy()
                if row is not None and performer.present[row]:
                    t = float(poses.times[row])
                    draw_gait_frame(image, performer.landmarks[row],
                                    {side: in_contact(result, side, t) for side in ("left", "right")})
                yield image

        outputs["video"] = str(write_video(folder / "gait.mp4", frames(), poses.info.fps or poses.rate or 30.0))
    outputs["page"] = str(write_gait_page(folder / "report.html", report, folder / "gait.png"))
    return outputs


def write_gait_csv(path: str | Path, steps: list[dict]) -> Path:
    """One row per step (the keys of gait.json's steps), empty cells where a value is missing."""
    import csv

    keys = list(dict.fromkeys(k for step in steps for k in step))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for step in steps:
            writer.writerow(["" if step.get(k) is None else step[k] for k in keys])
    return Path(path)
