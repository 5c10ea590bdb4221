"""Reports' numbers as a coach says them: formatted at the edge (the CLI, the report page), never
stored in a report."""

from __future__ import annotations

from posescore.kernels import score_band
from posescore.kernels.skeleton import ELEVATION_JOINTS, TILT_NAMES

#: A joint within this many degrees of the reference is not worth a remark.
NOTABLE_DEG = 10.0


def clock(seconds: float) -> str:
    """``0:04.2``: minutes and seconds to a tenth."""
    minutes, rest = divmod(max(0.0, float(seconds)), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def joint_remark(joint: str, angles: dict, at: float | None = None) -> str:
    """``left knee 35° less bent than the reference at 0:04.2`` for a joint's ``{"reference",
    "attempt", "difference"}`` flexions (degrees; a shoulder's is its arm's elevation), or
    ``trunk leaning 12° more to the picture's right than the reference`` for a tilt
    (``kernels.skeleton.TILT_NAMES``)."""
    name = joint.replace("_", " ")
    diff = angles["difference"]
    if joint in ("shoulder_line", "eye_line"):
        what = "shoulders" if joint == "shoulder_line" else "head"
        text = f"{what} turned {abs(diff):.0f}° from the reference's" + (", facing another way" if abs(diff) > 90 else "")
    elif joint in TILT_NAMES:
        side = "right" if diff > 0 else "left"
        what = "trunk leaning" if joint == "trunk_tilt" else "head tilted"
        text = f"{what} {abs(diff):.0f}° more to the picture's {side} than the reference"
    elif joint in ELEVATION_JOINTS:
        how = "higher" if diff > 0 else "lower"
        text = f"{name.replace('shoulder', 'arm')} raised {abs(diff):.0f}° {how} than the reference"
    else:
        text = f"{name} {abs(diff):.0f}° {'more' if diff > 0 else 'less'} bent than the reference"
    return text if at is None else f"{text} at {clock(at)}"


def moment_times(moment: dict) -> str:
    """``attempt 0:04.2, reference 0:03.9``: both times of a moment, labelled."""
    return f"attempt {clock(moment['attempt_time'])}, reference {clock(moment['reference_time'])}"


def moment_feedback(moment: dict | None) -> str:
    """What a worst moment of a report says: the part most off and, of that part's angles, the one
    that differs most, in degrees and with its direction (``left leg: left knee 35° less bent than
    the reference``); a difference under NOTABLE_DEG is said to be small. Both times, labelled."""
    if not moment or not moment.get("worst_part"):
        return "-"
    text = moment["worst_part"].replace("_", " ")
    joint = moment.get("joint")
    if joint and abs(moment["joint_angles"]["difference"]) >= NOTABLE_DEG:
        text += ": " + joint_remark(joint, moment["joint_angles"])
    elif joint:
        text += f" off, though its {joint.replace('_', ' ')} is within {NOTABLE_DEG:.0f}° of the reference"
    else:
        text += " off"
    return f"{text} ({moment_times(moment)})"


def verdict(score: float) -> str:
    """``98.8 out of 100: the same movement``: a movement's score with its band's words."""
    return f"{score:.1f} out of 100: {score_band(score)}"


def no_moment_line(threshold: float) -> str:
    """What a report says when no step is under the threshold."""
    return f"no moment under {threshold:g}: the movement matches the reference throughout"


def format_parts(parts: dict) -> str:
    """``head 98  torso 97 ...``: part scores rounded, ``-`` for a part not scored."""
    return "  ".join(f"{name} {'-' if v is None else f'{v:.0f}'}" for name, v in parts.items())


def followed_line(source: dict) -> str:
    """``track 3 (auto: best fit of 2 tracks)``: whom a report's source followed, and how chosen."""
    choice = source.get("performer_choice")
    return f"track {source['performer_track']}" + (f" ({choice})" if choice else "")


def followed_sentence(report: dict) -> str:
    """``followed: track 0 (...) in the reference, track 2 (...) in the attempt`` of a compare
    report or a reps result."""
    return (f"followed: {followed_line(report['reference'])} in the reference, "
            f"{followed_line(report['attempt'])} in the attempt")


def no_reps_sentence(no_reps: dict) -> str:
    """Why a reps result has no repetition: ``no repetition found: <reason> (nearest: 1.20-2.50 s,
    played forwards)``, from its ``no_reps``."""
    nearest = no_reps.get("nearest")
    where = "" if nearest is None else (
        f" (nearest: {clock(nearest['start_time'])}-{clock(nearest['end_time'])}, played "
        f"{'backwards' if nearest['backwards'] else 'forwards'})")
    return f"no repetition found: {no_reps['reason']}{where}"
