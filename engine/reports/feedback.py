"""Reports' numbers as a coach says them: formatted at the edge (the CLI, the report page), never
stored in a report."""

from __future__ import annotations

from posescore.kernels.skeleton import ELEVATION_JOINTS

#: A joint within this many degrees of the reference is not worth a remark.
NOTABLE_DEG = 10.0


def clock(seconds: float) -> str:
    """``0:04.2``: minutes and seconds to a tenth."""
    minutes, rest = divmod(max(0.0, float(seconds)), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def joint_remark(joint: str, angles: dict, at: float | None = None) -> str:
    """``left knee 35° less bent than the reference at 0:04.2`` for a joint's ``{"reference",
    "attempt", "difference"}`` flexions (degrees; a shoulder's is its arm's elevation)."""
    name = joint.replace("_", " ")
    diff = angles["difference"]
    if joint in ELEVATION_JOINTS:
        how = "higher" if diff > 0 else "lower"
        text = f"{name.replace('shoulder', 'arm')} raised {abs(diff):.0f}° {how} than the reference"
    else:
        text = f"{name} {abs(diff):.0f}° {'more' if diff > 0 else 'less'} bent than the reference"
    return text if at is None else f"{text} at {clock(at)}"


def moment_feedback(moment: dict | None) -> str:
    """What a worst moment of a report says: the joint most off (when over NOTABLE_DEG), else the
    part most off, at the attempt's time."""
    if not moment:
        return "-"
    if moment.get("joint") and abs(moment["joint_angles"]["difference"]) >= NOTABLE_DEG:
        return joint_remark(moment["joint"], moment["joint_angles"], moment["attempt_time"])
    if moment.get("worst_part"):
        return f"{moment['worst_part'].replace('_', ' ')} off at {clock(moment['attempt_time'])}"
    return "-"


def format_parts(parts: dict) -> str:
    """``head 98  torso 97 ...``: part scores rounded, ``-`` for a part not scored."""
    return "  ".join(f"{name} {'-' if v is None else f'{v:.0f}'}" for name, v in parts.items())
