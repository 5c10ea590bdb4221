"""The gait report's drawings: gait.png (the contact signals and the pelvis with the contacts
marked), a video frame's skeleton (the feet in contact filled) and report.html (one self-contained
page: summary, steps, the plot). ``jobs.gait`` writes the files."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from posescore.kernels.skeleton import LANDMARK_LIMBS, LM

SIDE_COLOURS = {"left": (66, 135, 245), "right": (245, 130, 48)}  # RGB


def plot_gait(path: Path, times, result) -> Path:
    """gait.png: heel ahead of the pelvis (initial contacts at its peaks), foot tip behind it (toe-offs),
    and the pelvis's height, each side in its colour, the contacts as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for side, colour in SIDE_COLOURS.items():
        c = tuple(v / 255 for v in colour)
        axes[0].plot(times, result.signals[f"{side}_heel_ahead"], color=c, label=f"{side} heel ahead of pelvis (px)")
        axes[1].plot(times, result.signals[f"{side}_toe_behind"], color=c, label=f"{side} foot tip behind pelvis (px)")
        for t in result.contacts[side]["ic"]:
            axes[0].axvline(t, color=c, lw=0.8, ls="-")
            axes[2].axvline(t, color=c, lw=0.8, ls="-")
        for t in result.contacts[side]["to"]:
            axes[1].axvline(t, color=c, lw=0.8, ls="--")
            axes[2].axvline(t, color=c, lw=0.8, ls="--")
    axes[2].plot(times, result.signals["pelvis_height_px"], color="k", label="pelvis height (px, up)")
    axes[0].set_title(f"{result.mode}: initial contacts (solid) and toe-offs (dashed)")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[2].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def in_contact(result, side: str, t: float) -> bool:
    """Whether ``side``'s foot is on the ground at ``t`` seconds: between a contact and its toe-off."""
    for ic in result.contacts[side]["ic"]:
        to = next((x for x in result.contacts[side]["to"] if x > ic), None)
        if ic <= t <= (to if to is not None else ic):
            return True
    return False


def draw_gait_frame(image: np.ndarray, marks: np.ndarray, contact: dict[str, bool]) -> np.ndarray:
    """``image`` with the 33-landmark skeleton ``marks [33, 5]`` drawn, each foot's heel and tip a
    disc in its side's colour, filled while ``contact[side]``."""
    import cv2

    for a, b in LANDMARK_LIMBS:
        if marks[a, 3] > 0.3 and marks[b, 3] > 0.3:
            cv2.line(image, (int(marks[a, 0]), int(marks[a, 1])), (int(marks[b, 0]), int(marks[b, 1])),
                     (255, 255, 255), 2, cv2.LINE_AA)
    for side, colour in SIDE_COLOURS.items():
        for name in ("heel", "foot_index"):
            point = marks[LM[f"{side}_{name}"]]
            cv2.circle(image, (int(point[0]), int(point[1])), 7, colour, -1 if contact[side] else 2, cv2.LINE_AA)
    return image


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def write_gait_page(path: Path, report: dict, plot: Path) -> Path:
    """report.html: the summary (mean, sd, left, right, asymmetry), every step, the plot inlined."""
    summary = report["summary"]
    rows = []
    for name, value in summary.items():
        if isinstance(value, dict) and "mean" in value:
            asym = summary["asymmetry_percent"].get(name)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{_cell(value['mean'])}</td><td>{_cell(value['sd'])}</td>"
                        f"<td>{_cell(value['left'])}</td><td>{_cell(value['right'])}</td><td>{_cell(asym)}</td></tr>")
    steps = report["steps"]
    keys = list(dict.fromkeys(k for step in steps for k in step))
    step_rows = "".join("<tr>" + "".join(f"<td>{_cell(step.get(k))}</td>" for k in keys) + "</tr>" for step in steps)
    image = base64.b64encode(plot.read_bytes()).decode()
    strikes = ", ".join(f"{k} {v}" for k, v in summary["foot_strike"].items())
    speed = (f"{summary['speed_km_per_h']} km/h (from {html.escape(report['speed_from'])})"
             if "speed_km_per_h" in summary else "not known")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.get("notes", []))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gait: {html.escape(Path(report['source']).name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;
margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
.big{{font-size:1.4em}}img{{max-width:100%}}</style></head><body>
<h1>Gait: {html.escape(Path(report['source']).name)}</h1>
<p class="big" id="headline">{html.escape(report['mode'])}, cadence <b id="cadence">{summary['cadence_steps_per_min']}</b>
steps/min over {summary['steps']} steps; foot strike: {html.escape(strikes)}; speed {speed}</p>
<p>Lengths from {html.escape(report['scale_from'])}; {report['metres_per_pixel'] * 1000:.2f} mm per pixel. Person:
track {report['person']['track']} ({html.escape(report['person']['choice'])}).</p>
<ul>{notes}</ul>
<h2>Summary</h2>
<table id="summary"><tr><th>figure</th><th>mean</th><th>sd</th><th>left</th><th>right</th><th>asymmetry %</th></tr>
{''.join(rows)}</table>
<h2>Signals</h2><img alt="gait signals" src="data:image/png;base64,{image}">
<h2>Steps</h2>
<table id="steps"><tr>{''.join(f'<th>{html.escape(k)}</th>' for k in keys)}</tr>{step_rows}</table>
</body></html>
"""
    path.write_text(page)
    return path
