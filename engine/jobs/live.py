"""``posescore live``: repetitions of a reference scored while they happen, from a video played
frame by frame (a camera's stand-in, at its own pace with ``realtime``) or from keypoints on stdin."""

from __future__ import annotations

import itertools
import json
import math
import time as clock
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from posescore.clients.live import LiveSession
from posescore.clients.protocol import PoseScoreError
from posescore.engine.analysis.people import box_iou, parse_person, spec_person
from posescore.engine.analysis.reps import REP_MAX_RATIO, REP_MIN_RATIO, REP_MIN_SCORE
from posescore.engine.jobs.inputs import FrameCursor, JobError, check_movement_source, choose_reference, load_poses
from posescore.engine.jobs.reps import reference_rows
from posescore.engine.media.live_source import RECONNECT_S, LiveSource, is_live_source
from posescore.engine.media.video import iter_probed_frames, probe
from posescore.kernels import SCORE_THRESHOLD

#: Frames per pose request when a file is played as fast as it decodes (not --realtime).
PLAYBACK_BATCH = 8


def live_job(reference, source, client, *, emit: Callable[[dict], None], start: float | None = None,
             end: float | None = None, reference_person=None, realtime: bool = False, fps: float | None = None,
             threshold: float = SCORE_THRESHOLD, mirror: bool = False, min_ratio: float = REP_MIN_RATIO,
             max_ratio: float = REP_MAX_RATIO, min_score: float = REP_MIN_SCORE,
             stdin: Iterable[str] | None = None, page=None, person=None, reconnect: float = RECONNECT_S) -> dict:
    """Play ``source`` against the repetition ``reference`` (a video or pose JSON, from ``start``
    to ``end`` seconds) on the server's ``live`` model (a ``clients.live.LiveSession``), calling
    ``emit`` with each event as it happens (``start``, ``frame``, ``rep``; see
    ``engine.analysis.live``). ``source``: a video file, through the pose model (``client``) as
    fast as it decodes, PLAYBACK_BATCH frames a request, or with ``realtime`` one at a time at the
    video's own pace, a frame that is due after the next one dropped (the newest wins) and
    counted; a camera ``/dev/videoN`` or a network stream URL, read as it comes (the newest frame
    each time the pose model is free) and opened again for up to ``reconnect`` s when it drops;
    or ``"-"``: JSON lines of keypoints from ``stdin``. The person followed is ``person``
    (``X,Y@T`` or ``X0,Y0,X1,Y1@T``: the one whose box holds the point, or overlaps the box most,
    in the first frame at or after T s; no one before), else (auto) the main one of the first
    frame with anyone; then the one overlapping them most. With a ``page``
    (``reports.live_page.LivePage``), the page is shown the reference performer and each event as
    it happens, a frame's with its picture (a video's) and the pose followed. Returns the ``end``
    event, with ``frames`` and ``dropped``; a camera or stream gone for good is a JobError after
    the ``end`` event, naming the repetitions kept."""
    check_movement_source(reference, "reference")
    spec = parse_person(person, "--person")
    if spec.track is not None:
        raise JobError(f"--person {spec.text}: a track id needs the whole video's tracks; live takes X,Y@T or "
                       f"X0,Y0,X1,Y1@T (the person there at T s, then followed), or auto")
    ref = load_poses(reference, client)
    rows = reference_rows(ref, start, end)
    performer = choose_reference(ref, reference, reference_person, rows=rows)
    present = np.zeros(len(ref), bool)
    present[rows] = performer.present[rows]
    if present.sum() < 2:
        raise JobError(f"{reference}: the performer is in {int(present.sum())} frame(s) of the reference; need 2")
    if page is not None:
        cursor = FrameCursor(reference, ref.info)
        pictures = None if cursor.frames is None else (cursor.get(int(i)) for i in ref.frame_indices[present])
        page.reference(performer.poses[present], ref.rate, pictures, name=Path(str(reference)).name)

    def show(event: dict, image=None, pose=None) -> None:
        emit(event)
        if page is not None:
            page.publish(event, image=image, pose=pose)

    stream = None
    if source == "-":
        frames = _stdin_people(stdin)
        rate = fps or ref.rate  # keypoints on stdin say their times, not their rate
    elif is_live_source(source):
        stream = LiveSource(source, reconnect_s=reconnect)
        frames = _source_people(stream, client)
        rate = fps or ref.rate  # frames come when they come: their times are the clock's
    else:
        info = probe(source)
        rate = fps or info.fps
        frames = _video_people(info, client, fps=fps, realtime=realtime)
    followed, count, dropped, session = None, 0, 0, None
    try:
        # Opened before the first frame is read: a video's clock (--realtime) starts with it.
        session = LiveSession(client.urls, performer.poses[present], reference_fps=ref.rate,
                              fps=float(rate or ref.rate), name=str(reference), threshold=threshold,
                              mirror=mirror, min_ratio=min_ratio, max_ratio=max_ratio, min_score=min_score)
        show(session.started)
        for frame, moment, people, missed, image in frames:
            dropped += missed
            if followed is None and not spec.auto:
                followed = _chosen(people, spec, moment)  # None until T, and while no one is there
                if followed is None:
                    people = []
            pose, followed = _follow(people, followed)
            for event in session.send(pose, moment, frame):
                show(event, image, pose)
            count += 1
        if not count:
            raise JobError(stream.error if stream is not None and stream.error else f"{source}: no frames")
        before = len(session.reps)
        result = session.end()
        for event in session.reps[before:]:  # found in the last frames
            show(event)
    except PoseScoreError as err:
        raise JobError(f"{source}: {err}" + (f" (repetitions so far: {_so_far(session.reps)})"
                                             if session is not None and session.reps else "")) from None
    finally:
        if session is not None:
            session.close()
        if stream is not None:
            stream.close()
    result.update(frames=count, dropped=dropped)
    if stream is not None:
        result.update(connections=stream.connections, source_error=stream.error)
    show(result)
    if stream is not None and stream.error:  # the camera or stream is gone: say so, after what it gave
        raise JobError(f"{stream.error}; {len(result['reps'])} repetition(s) kept"
                       + (f": {_so_far(result['reps'])}" if result["reps"] else ""))
    return result


def _so_far(reps: list[dict]) -> str:
    return "; ".join(f"{r['rep']}: {r['start_time']:.2f}-{r['end_time']:.2f} s, {r['score']:.1f}" for r in reps)


def _chosen(people: list[tuple[np.ndarray, np.ndarray]], spec, moment: float) -> np.ndarray | None:
    """The box of the person ``spec`` names (``analysis.people.spec_person``) in a frame at
    ``moment`` s, at or after its time; None otherwise."""
    if moment + 1e-6 < spec.time or not people:
        return None
    boxes = np.stack([box for _, box in people]).astype(np.float64)
    n = spec_person(boxes, spec)
    return None if n is None else boxes[n]


def _follow(people: list[tuple[np.ndarray, np.ndarray]], followed: np.ndarray | None):
    """``(pose or None, box followed)``: of ``people`` ([(pose [17, 3], box [4])]), the one whose
    box overlaps the last followed box most, or the largest when none does (or none was)."""
    if not people:
        return None, followed
    boxes = np.stack([box for _, box in people]).astype(np.float64)
    if followed is not None:
        overlap = box_iou(followed[None], boxes)[0]
        if overlap.max() > 0.1:
            n = int(overlap.argmax())
            return people[n][0], boxes[n]
    n = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    return people[n][0], boxes[n]


def _video_people(info, client, *, fps: float | None, realtime: bool) -> Iterator[tuple]:
    """``(frame index, time s, [(pose, box)], frames dropped before it, RGB frame)`` per frame of a
    video, through the pose model; with ``realtime``, one at a time, paced to the video's clock,
    frames already late when the next is due dropped (the newest wins: no queue); without, as fast
    as it decodes, PLAYBACK_BATCH frames per pose request."""
    frames = iter_probed_frames(info, fps=fps, max_side=None, start=0.0, end=None)  # probed once, by the caller
    if not realtime:
        while batch := list(itertools.islice(frames, PLAYBACK_BATCH)):
            result = client.pose(np.stack([f.rgb for f in batch]))
            for n, item in enumerate(batch):
                yield item.index, float(item.time), _people(result, n), 0, item.rgb
        return
    began, dropped = None, 0
    pending = next(frames, None)
    while pending is not None:
        upcoming = next(frames, None)
        if began is None:
            began = clock.monotonic() - pending.time
        now = clock.monotonic() - began
        if upcoming is not None and now >= upcoming.time:  # late: skip to the newer frame
            pending, dropped = upcoming, dropped + 1
            continue
        if pending.time > now:
            clock.sleep(pending.time - now)
        yield pending.index, float(pending.time), _people(client.pose(pending.rgb[None]), 0), dropped, pending.rgb
        dropped = 0
        pending = upcoming


def _source_people(stream: LiveSource, client) -> Iterator[tuple]:
    """``(frame index, time s, [(pose, box)], frames dropped before it, RGB frame)`` per frame of a
    camera or network stream, the newest each time the pose model is free."""
    for frame, dropped in stream.frames():
        yield frame.index, float(frame.time), _people(client.pose(frame.rgb[None]), 0), dropped, frame.rgb


def _people(result, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frame ``n`` of a pose answer as [(pose [17, 3], box [4])]."""
    return [(np.asarray(result.keypoints[n][p], np.float32), np.asarray(result.boxes[n][p], np.float32))
            for p in range(int(result.counts[n]))]


def _stdin_people(lines: Iterable[str] | None) -> Iterator[tuple]:
    """``(frame, time, [(pose, box)], 0, None)`` per frame of JSON lines on stdin (no picture), one
    detection a line (the fields ``posescore pose`` writes: ``keypoints`` 51 numbers, ``box``
    [x, y, w, h], ``frame``, ``time``); lines of one frame are consecutive. A line that is not such
    a record is a JobError naming its number."""
    import sys

    current, people = None, []
    for number, line in enumerate(lines if lines is not None else sys.stdin, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_int=float)
            keypoints = np.asarray(record["keypoints"], np.float32).reshape(17, 3)
            moment = float(record["time"])
            frame = int(record.get("frame", number - 1))
            if record.get("box") is not None:  # [x, y, w, h], as written
                x, y, w, h = (float(v) for v in record["box"])
                box = np.array([x, y, x + w, y + h], np.float32)
            else:
                box = _extent(keypoints)
        except (ValueError, KeyError, TypeError) as err:
            raise JobError(f"stdin line {number}: expected a pose record (keypoints: 51 numbers, time: seconds), "
                           f"got {line.strip()[:80]!r} ({type(err).__name__}: {err})") from None
        if not math.isfinite(moment):
            raise JobError(f"stdin line {number}: time must be a number of seconds, got {record['time']!r}")
        if current is not None and (frame, moment) != current:
            yield current[0], current[1], people, 0, None
            people = []
        current = (frame, moment)
        people.append((keypoints, box))
    if current is not None:
        yield current[0], current[1], people, 0, None


def _extent(keypoints: np.ndarray) -> np.ndarray:
    """``[x0, y0, x1, y1]`` of the keypoints seen (zeros with none)."""
    seen = keypoints[keypoints[:, 2] > 0]
    if not len(seen):
        return np.zeros(4, np.float32)
    return np.array([seen[:, 0].min(), seen[:, 1].min(), seen[:, 0].max(), seen[:, 1].max()], np.float32)
