"""Gait from BlazePose GHUM's landmarks seen from the side: foot contacts, and per step and in
summary cadence, contact and flight (or double-support) times, duty factor, knee flexion, overstride,
the pelvis's vertical oscillation, trunk lean, foot strike and left-right asymmetry.

Contacts follow Zeni et al. (2008), which needs no force plate and holds on a treadmill and
overground: initial contact (IC) is when the heel is farthest ahead of the pelvis, toe-off (TO)
when the foot tip is farthest behind it, along the direction the runner faces. The signals are
smoothed over a fixed share of the stride, found from the signal itself, so that the events do not
depend on the frame rate or the speed of play: a video played at half speed has half the cadence
and twice the times. Peaks are placed between frames by a parabola.

Lengths in metres come from the runner's height when given, else from the world landmarks' own
scale; the runner's stature in pixels is their eyes' height over the heels, at its 95th percentile,
over 0.936 (the eyes' height over stature, Drillis and Contini). Knee angles are measured in 3-D on
the world landmarks (``kernels.skeleton.world_joint_angles``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from posescore.kernels.skeleton import COCO_FROM_LANDMARKS, JOINT_NAMES, LM, TILT_NAMES, tilts, world_joint_angles

#: A landmark counts as seen at this visibility or more.
MIN_VISIBILITY = 0.5
#: Heights a person can have, metres; treadmill speeds, km/h.
HEIGHT_RANGE = (0.8, 2.5)
SPEED_RANGE = (0.5, 40.0)
#: The eyes' height over stature (Drillis and Contini).
EYE_HEIGHT_RATIO = 0.936
#: Foot strike angle (the foot's angle to the ground at contact less its angle flat in midstance;
#: toe up positive) bounds of Altman and Davis (2012): above 8 rearfoot, below -1.6 forefoot.
REARFOOT_ABOVE, FOREFOOT_BELOW = 8.0, -1.6
#: The smoothing's Gaussian sigma as a share of the stride.
SMOOTHING = 0.05
#: A gap of frames without the feet longer than this share of a stride splits the signal.
MAX_GAP = 0.25
#: An overground run: the pelvis travels at least this many statures across the frame.
OVERGROUND_STATURES = 1.0
SIDES = ("left", "right")


class GaitError(ValueError):
    """Gait cannot be measured on this input; ``partial`` holds what was found before (or None)."""

    def __init__(self, message: str, partial: dict | None = None):
        super().__init__(message)
        self.partial = partial


@dataclass
class GaitInput:
    """One performer's landmarks over F frames: ``times [F]`` seconds, ``present [F]`` bool,
    ``landmarks [F, 33, 5]`` (image pixels, visibility, presence), ``world [F, 33, 3]`` metres,
    ``width`` and ``height`` of the frame in pixels (0: unknown)."""

    times: np.ndarray
    present: np.ndarray
    landmarks: np.ndarray
    world: np.ndarray
    width: int = 0
    height: int = 0
    source: str = ""


@dataclass
class GaitResult:
    """What :func:`analyse_gait` measured; ``report()`` is gait.json's content."""

    mode: str                       # "running" or "walking"
    direction: int                  # +1: the runner faces the image's +x, -1: -x
    metres_per_pixel: float
    scale_from: str
    contacts: dict                  # side -> {"ic": [s], "to": [s]}
    steps: list[dict]
    summary: dict
    signals: dict = field(default_factory=dict)   # for the plot: name -> (times, values)
    notes: list[str] = field(default_factory=list)
    speed_mps: float | None = None
    speed_from: str | None = None
    seen: tuple[float, float] = (0.0, 0.0)  # the first and last time both feet are seen, seconds

    def report(self) -> dict:
        return {"mode": self.mode, "direction": "right" if self.direction > 0 else "left",
                "metres_per_pixel": self.metres_per_pixel, "scale_from": self.scale_from,
                "speed_m_per_s": self.speed_mps, "speed_from": self.speed_from,
                "feet_seen_s": [round(self.seen[0], 4), round(self.seen[1], 4)],
                "contacts": self.contacts, "summary": self.summary, "steps": self.steps, "notes": self.notes}


def check_options(height: float | None, treadmill_kmh: float | None) -> None:
    """Refuse a height or treadmill speed out of range, naming it (a GaitError)."""
    if height is not None and not (math.isfinite(height) and HEIGHT_RANGE[0] <= height <= HEIGHT_RANGE[1]):
        raise GaitError(f"--height {height:g}: expected the runner's height in metres, {HEIGHT_RANGE[0]:g} to "
                        f"{HEIGHT_RANGE[1]:g}")
    if treadmill_kmh is not None and not (math.isfinite(treadmill_kmh)
                                          and SPEED_RANGE[0] <= treadmill_kmh <= SPEED_RANGE[1]):
        raise GaitError(f"--treadmill-speed {treadmill_kmh:g}: expected km/h, {SPEED_RANGE[0]:g} to "
                        f"{SPEED_RANGE[1]:g}")


def _mean_of(landmarks: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return landmarks[:, [LM[n] for n in names]].mean(1)


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """``values`` smoothed by a Gaussian of ``sigma`` samples, mirrored at the ends."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(values, np.float64), sigma, mode="mirror", truncate=3.0) if sigma > 0 \
        else np.array(values, np.float64)


def _period(values: np.ndarray, low: int, high: int) -> int | None:
    """The lag in [low, high] samples of the highest autocorrelation peak of ``values``."""
    x = values - values.mean()
    if len(x) < 2 * low or not np.any(x):
        return None
    corr = np.correlate(x, x, mode="full")[len(x) - 1:] / (np.arange(len(x), 0, -1))
    corr /= corr[0]
    high = min(high, len(x) // 2)
    best, best_lag = -1.0, None
    for lag in range(max(low, 1), high + 1):
        if corr[lag - 1] < corr[lag] >= corr[min(lag + 1, len(corr) - 1)] and corr[lag] > best:
            best, best_lag = corr[lag], lag
    return best_lag if best > 0.1 else None


def _peaks(values: np.ndarray, distance: float, prominence: float) -> np.ndarray:
    """Indices of maxima of ``values`` at least ``distance`` apart and standing ``prominence`` above
    their surroundings, refined between samples by a parabola: float positions."""
    from scipy.signal import find_peaks

    found, _ = find_peaks(values, distance=max(1, int(distance)), prominence=prominence)
    refined = []
    for i in found:
        if 0 < i < len(values) - 1:
            a, b, c = values[i - 1], values[i], values[i + 1]
            denom = a - 2 * b + c
            refined.append(i + (0.5 * (a - c) / denom if denom < 0 else 0.0))
        else:
            refined.append(float(i))
    return np.asarray(refined, np.float64)


def _segments(ok: np.ndarray, times: np.ndarray, max_gap: float) -> list[np.ndarray]:
    """Runs of frames where ``ok``, a gap shorter than ``max_gap`` seconds bridged."""
    rows = np.flatnonzero(ok)
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(times[rows]) > max_gap) + 1
    return [part for part in np.split(rows, cuts) if len(part) >= 4]


def _at(times: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Times of fractional sample positions."""
    return np.interp(positions, np.arange(len(times)), times)


def _value_at(times: np.ndarray, values: np.ndarray, t: float) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return float("nan")
    return float(np.interp(t, times[ok], values[ok]))


def analyse_gait(gait: GaitInput, *, height: float | None = None, treadmill_kmh: float | None = None) -> GaitResult:
    """Foot contacts and the gait figures of ``gait`` (see the module docstring). Raises
    :class:`GaitError` naming the problem: no foot seen, fewer than two steps (with what was found
    in ``partial``), a treadmill speed given for an overground run, a height or speed out of range."""
    check_options(height, treadmill_kmh)
    times = np.asarray(gait.times, np.float64)
    marks = np.asarray(gait.landmarks, np.float64)
    world = np.asarray(gait.world, np.float64)
    present = np.asarray(gait.present, bool)
    source = gait.source or "the video"
    feet = [LM[f"{s}_{p}"] for s in SIDES for p in ("heel", "foot_index")]
    visible = present & (marks[:, feet, 3] >= MIN_VISIBILITY).all(1)
    if gait.width and gait.height:
        xy = marks[:, feet, :2]
        visible &= ((xy[..., 0] >= 0) & (xy[..., 0] < gait.width) & (xy[..., 1] >= 0)
                    & (xy[..., 1] < gait.height)).all(1)
    if visible.sum() < 4:
        raise GaitError(f"{source}: no foot is visible: both heels and foot tips are seen in {int(visible.sum())} of "
                        f"{len(times)} frames (visibility >= {MIN_VISIBILITY}); film the whole body, feet included")
    notes = []
    seen_rows = np.flatnonzero(visible)
    if present.any():
        last_present = np.flatnonzero(present)[-1]
        if seen_rows[-1] < len(times) - 1 and (not present[-1] or not visible[last_present]):
            notes.append(f"the runner's feet leave the frame (or the view) after {times[seen_rows[-1]]:.2f} s; "
                         f"the steps before are measured")

    pelvis = _mean_of(marks, ("left_hip", "right_hip"))[:, :2]
    heel = {s: marks[:, LM[f"{s}_heel"], :2] for s in SIDES}
    toe = {s: marks[:, LM[f"{s}_foot_index"], :2] for s in SIDES}
    # The direction the runner faces: their feet point that way (the toe ahead of the heel).
    pointing = np.concatenate([(toe[s][visible, 0] - heel[s][visible, 0]) for s in SIDES])
    direction = 1 if np.median(pointing) >= 0 else -1
    foot_px = np.median(np.abs(pointing))
    shank_px = np.median(np.concatenate([np.linalg.norm(marks[visible, LM[f"{s}_knee"], :2]
                                                        - marks[visible, LM[f"{s}_ankle"], :2], axis=1)
                                         for s in SIDES]))
    if foot_px < 0.2 * shank_px:
        raise GaitError(f"{source}: the feet are seen end-on (foot length {foot_px:.0f} px against a shank of "
                        f"{shank_px:.0f} px): gait needs the runner filmed from the side")

    # Scale: metres per pixel.
    eyes = _mean_of(marks, ("left_eye", "right_eye"))[:, 1]
    heels_y = _mean_of(marks, ("left_heel", "right_heel"))[:, 1]
    stature_px = float(np.percentile((heels_y - eyes)[visible], 95)) / EYE_HEIGHT_RATIO
    if height is not None:
        stature_m, scale_from = float(height), f"the runner's height, {height:g} m"
    else:
        world_eyes = _mean_of(world, ("left_eye", "right_eye"))[:, 1]
        world_heels = _mean_of(world, ("left_heel", "right_heel"))[:, 1]
        stature_m = float(np.percentile((world_heels - world_eyes)[visible], 95)) / EYE_HEIGHT_RATIO
        scale_from = f"the world landmarks (stature {stature_m:.2f} m)"
    metres_per_pixel = stature_m / stature_px

    # Overground or treadmill: how far the pelvis travels across the frame.
    travel_px = float(np.ptp(pelvis[visible, 0]))
    overground = travel_px * metres_per_pixel >= OVERGROUND_STATURES * stature_m
    speed, speed_from = None, None
    if treadmill_kmh is not None:
        if overground:
            raise GaitError(f"{source}: --treadmill-speed {treadmill_kmh:g} km/h, but the runner travels "
                            f"{travel_px * metres_per_pixel:.1f} m across the frame: this is an overground run; "
                            f"leave --treadmill-speed out")
        speed, speed_from = treadmill_kmh / 3.6, "the treadmill's speed"
    elif overground:
        rows = np.flatnonzero(visible)
        fit = np.polyfit(times[rows], pelvis[rows, 0], 1)[0]
        speed, speed_from = abs(fit) * metres_per_pixel, "the pelvis's travel across the frame"

    # Contacts per side, segment by segment.
    ahead = {s: (heel[s][:, 0] - pelvis[:, 0]) * direction for s in SIDES}
    behind = {s: -(toe[s][:, 0] - pelvis[:, 0]) * direction for s in SIDES}
    rate = 1.0 / float(np.median(np.diff(times))) if len(times) > 1 else 30.0
    contacts = {s: {"ic": [], "to": []} for s in SIDES}
    smoothed = {f"{s}_{k}": np.full(len(times), np.nan) for s in SIDES for k in ("heel_ahead", "toe_behind")}
    first_period = _period(np.nan_to_num(ahead["left"][visible] - np.nanmean(ahead["left"][visible])),
                           int(0.3 * rate), int(3.0 * rate))
    gap = MAX_GAP * (first_period / rate if first_period else 1.0)
    for rows in _segments(visible, times, max(gap, 2.5 / rate)):
        segment_times = times[rows]
        period = _period(ahead["left"][rows], int(0.3 * rate), int(3.0 * rate)) or first_period
        if period is None:
            continue
        sigma = SMOOTHING * period
        for s in SIDES:
            h = _gaussian_smooth(ahead[s][rows], sigma)
            t = _gaussian_smooth(behind[s][rows], sigma)
            smoothed[f"{s}_heel_ahead"][rows], smoothed[f"{s}_toe_behind"][rows] = h, t
            spread_h, spread_t = np.ptp(h), np.ptp(t)
            contacts[s]["ic"] += list(_at(segment_times, _peaks(h, 0.6 * period, 0.2 * spread_h)))
            contacts[s]["to"] += list(_at(segment_times, _peaks(t, 0.6 * period, 0.2 * spread_t)))
    for s in SIDES:
        contacts[s] = {k: sorted(round(v, 4) for v in contacts[s][k]) for k in ("ic", "to")}

    steps = _steps(contacts, times, marks, world, pelvis, direction, metres_per_pixel, present)
    partial = {"contacts": contacts, "notes": notes, "metres_per_pixel": metres_per_pixel}
    if len(steps) < 2:
        raise GaitError(f"{source}: {len(steps)} step(s) found (initial contacts: left {len(contacts['left']['ic'])}, "
                        f"right {len(contacts['right']['ic'])}); gait needs at least two steps: film a longer run",
                        partial)
    contact_share = np.nanmean([st["contact_time_s"] / st["stride_time_s"] for st in steps
                                if st["stride_time_s"] and st["contact_time_s"] is not None] or [np.nan])
    mode = "walking" if contact_share > 0.5 else "running"
    for st in steps:
        if mode == "running":
            st.pop("double_support_s", None)
        else:
            st.pop("flight_time_s", None)
        if speed is not None and st["stride_time_s"]:
            st["stride_length_m"] = round(speed * st["stride_time_s"], 3)
    summary = _summary(steps, mode, speed)
    signals = {"pelvis_height_px": np.where(visible, -pelvis[:, 1], np.nan), **smoothed}
    return GaitResult(mode=mode, direction=direction, metres_per_pixel=metres_per_pixel, scale_from=scale_from,
                      contacts=contacts, steps=steps, summary=summary, signals=signals, notes=notes,
                      speed_mps=None if speed is None else round(speed, 3), speed_from=speed_from,
                      seen=(float(times[seen_rows[0]]), float(times[seen_rows[-1]])))


def _foot_angle(heel: np.ndarray, toe: np.ndarray, direction: int) -> np.ndarray:
    """The foot's angle to the image's horizontal, degrees, toe up positive."""
    dx = (toe[:, 0] - heel[:, 0]) * direction
    dy = heel[:, 1] - toe[:, 1]  # y grows downwards
    return np.degrees(np.arctan2(dy, dx))


def _steps(contacts, times, marks, world, pelvis, direction, metres_per_pixel, present) -> list[dict]:
    events = sorted((t, s) for s in SIDES for t in contacts[s]["ic"])
    knees = world_joint_angles(world)  # [F, 8]
    knee = {s: np.where(present, knees[:, JOINT_NAMES.index(f"{s}_knee")], np.nan) for s in SIDES}
    trunk = _trunk_lean(marks, direction)
    foot = {s: _foot_angle(marks[:, LM[f"{s}_heel"], :2], marks[:, LM[f"{s}_foot_index"], :2], direction)
            for s in SIDES}
    pelvis_y = pelvis[:, 1]
    steps = []
    for n, (ic, side) in enumerate(events[:-1]):
        other = "right" if side == "left" else "left"
        next_ic, next_side = events[n + 1]
        if next_side == side:
            continue  # a missed contact of the other foot: no step to measure
        to = next((t for t in contacts[side]["to"] if ic < t), None)
        same_next = next((t for t in contacts[side]["ic"] if t > ic), None)
        if to is not None and same_next is not None and to > same_next:
            to = None
        stride = (same_next - ic) if same_next is not None else None
        contact = (to - ic) if to is not None else None
        other_to = next((t for t in contacts[other]["to"] if ic < t < (to if to is not None else next_ic)), None)
        rows = (times >= ic) & (times <= (to if to is not None else next_ic))
        stance_knee = knee[side][rows]
        ic_row = int(np.argmin(np.abs(times - ic)))
        hip_x = pelvis[ic_row, 0]
        heel_x = marks[ic_row, LM[f"{side}_heel"], 0]
        stance = np.flatnonzero(rows)
        flat = (np.nanmedian(foot[side][stance[len(stance) // 3: 2 * len(stance) // 3 + 1]])
                if len(stance) >= 3 else np.nan)
        strike_angle = _value_at(times, foot[side], ic) - flat
        stride_rows = (times >= ic) & (times <= (same_next if same_next is not None else next_ic))
        step = {
            "side": side, "initial_contact_s": round(ic, 4), "toe_off_s": None if to is None else round(to, 4),
            "step_time_s": round(next_ic - ic, 4), "stride_time_s": None if stride is None else round(stride, 4),
            "contact_time_s": None if contact is None else round(contact, 4),
            "flight_time_s": None if contact is None else round(max(next_ic - to, 0.0), 4),
            "double_support_s": None if other_to is None else round(other_to - ic, 4),
            "duty_factor": None if (contact is None or not stride) else round(contact / stride, 4),
            "knee_flexion_at_contact_deg": _round(_value_at(times, knee[side], ic), 2),
            "peak_knee_flexion_stance_deg": _round(np.nanmax(stance_knee) if np.isfinite(stance_knee).any()
                                                   else np.nan, 2),
            "overstride_cm": _round((heel_x - hip_x) * direction * metres_per_pixel * 100, 2),
            "vertical_oscillation_cm": (_round(_oscillation(times[stride_rows], pelvis_y[stride_rows])
                                               * metres_per_pixel * 100, 2)
                                        if stride is not None and stride_rows.sum() >= 3 else None),
            "trunk_lean_deg": _round(np.nanmean(trunk[rows]) if np.isfinite(trunk[rows]).any() else np.nan, 2),
            "foot_strike_angle_deg": _round(strike_angle, 2),
            "foot_strike": _strike(strike_angle),
        }
        steps.append(step)
    return steps


def _oscillation(times: np.ndarray, heights: np.ndarray) -> float:
    """The range of ``heights`` over a stride about their straight-line trend (a runner coming
    nearer the camera, or a slope, moves the pelvis in the image too)."""
    ok = np.isfinite(heights)
    if ok.sum() < 3:
        return float("nan")
    trend = np.polyval(np.polyfit(times[ok], heights[ok], 1), times[ok])
    return float(np.ptp(heights[ok] - trend))


def _trunk_lean(marks: np.ndarray, direction: int) -> np.ndarray:
    """The trunk's lean from the vertical, degrees, forward (the way the runner faces) positive:
    ``kernels.skeleton.tilts``' trunk tilt of the landmarks' COCO points (NaN where the model saw
    no body: visibility 0)."""
    poses = marks[:, list(COCO_FROM_LANDMARKS)][..., [0, 1, 3]]
    return tilts(poses, min_confidence=0.0)[:, TILT_NAMES.index("trunk_tilt")].astype(np.float64) * direction


def _strike(angle: float) -> str | None:
    if not np.isfinite(angle):
        return None
    return "rearfoot" if angle > REARFOOT_ABOVE else "forefoot" if angle < FOREFOOT_BELOW else "midfoot"


def _round(value: float, digits: int) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


#: The per-step figures summarized (mean, sd), and those whose left-right asymmetry is given.
FIGURES = ("step_time_s", "stride_time_s", "contact_time_s", "flight_time_s", "double_support_s", "duty_factor",
           "knee_flexion_at_contact_deg", "peak_knee_flexion_stance_deg", "overstride_cm", "vertical_oscillation_cm",
           "trunk_lean_deg", "foot_strike_angle_deg", "stride_length_m")
ASYMMETRY = ("step_time_s", "contact_time_s", "knee_flexion_at_contact_deg", "peak_knee_flexion_stance_deg",
             "overstride_cm")


def _summary(steps: list[dict], mode: str, speed: float | None) -> dict:
    out: dict[str, Any] = {"steps": len(steps)}
    step_times = [st["step_time_s"] for st in steps]
    out["cadence_steps_per_min"] = round(60.0 / float(np.mean(step_times)), 2)
    for name in FIGURES:
        values = [st[name] for st in steps if st.get(name) is not None]
        if values:
            out[name] = {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values)), 4),
                         "left": _side_mean(steps, name, "left"), "right": _side_mean(steps, name, "right")}
    out["asymmetry_percent"] = {}
    for name in ASYMMETRY:
        left, right = _side_mean(steps, name, "left"), _side_mean(steps, name, "right")
        if left is not None and right is not None and (left + right) != 0:
            out["asymmetry_percent"][name] = round(100.0 * abs(left - right) / (abs(left + right) / 2), 2)
    strikes = [st["foot_strike"] for st in steps if st["foot_strike"]]
    out["foot_strike"] = {k: strikes.count(k) for k in ("rearfoot", "midfoot", "forefoot")}
    if speed is not None:
        out["speed_km_per_h"] = round(speed * 3.6, 2)
    return out


def _side_mean(steps: list[dict], name: str, side: str) -> float | None:
    values = [st[name] for st in steps if st["side"] == side and st.get(name) is not None]
    return round(float(np.mean(values)), 4) if values else None
