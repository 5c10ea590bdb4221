"""``report.html``: one self-contained page (video, thumbnails and plotly's script inlined; no
network) that shows a ``compare`` or ``reps`` report. The numbers come from the report; the words
from ``engine.reports.feedback``. The score plot is plotly's (hover for a step's numbers, click to seek
the video there); the PNG the job also writes is the same plot for documents."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import av
import cv2
import numpy as np

from posescore.engine.reports.feedback import clock, followed_line, moment_feedback, no_moment_line, no_reps_sentence
from posescore.kernels import SCORE_BANDS, score_band, under_threshold

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
.score { font-size: 40px; font-weight: 600; } .under { color: #c62828; font-weight: 600; }
.band { font-size: 17px; } .legend, .bands { color: #555; font-size: 13px; }
.followed { width: 360px; } .followed img { width: 360px; border: 1px solid #ccc; }
table { border-collapse: collapse; }
td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
tr.seek, p.seek { cursor: pointer; } tr.seek:hover, p.seek:hover { background: #f3f3f3; }
video { max-width: 100%; } .moments { display: flex; flex-wrap: wrap; gap: 12px; }
.moment { width: 250px; cursor: pointer; } .moment img { width: 250px; border: 1px solid #ccc; }
"""

_SCRIPT = """
const video = document.getElementById('video');
const errors = [];
const mark = (key, value) => { document.body.dataset[key] = value; };
window.addEventListener('error', e => { errors.push(String(e.message)); mark('errors', errors.join('; ')); });
video.addEventListener('error', () => mark('errors', 'video: ' + (video.error && video.error.code)));
const duration = () => mark('videoDuration', video.duration.toFixed(3));
if (video.readyState >= 1) duration(); else video.addEventListener('loadedmetadata', duration);
video.addEventListener('timeupdate', () => {
  if (video.currentTime > 0) mark('played', video.currentTime.toFixed(3));
});
const seek = t => { video.currentTime = t; video.play(); };
for (const el of document.querySelectorAll('[data-seek]')) {
  el.addEventListener('click', () => seek(parseFloat(el.dataset.seek)));
}
const plot = document.getElementById('plot');
if (plot && plot.on) {
  plot.on('plotly_click', e => seek(e.points[0].customdata));
  mark('plotPoints', String(plot.data.reduce((n, trace) => n + (trace.customdata ? trace.customdata.length : 0), 0)));
}
video.muted = true;
video.play().catch(e => mark('playError', String(e)));
mark('ready', '1');
"""


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnails(video: Path, times: list[float], width: int = 250) -> list[str]:
    """JPEG data URIs of the frames of ``video`` nearest to ``times`` (seconds)."""
    wanted = sorted(range(len(times)), key=lambda n: times[n])
    out: list[str | None] = [None] * len(times)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        targets = [round(times[n] * rate) for n in wanted]
        index, pending = 0, list(zip(targets, wanted))
        last = None
        for frame in container.decode(stream):
            last = frame
            while pending and pending[0][0] <= index:
                out[pending.pop(0)[1]] = _jpeg(frame.to_ndarray(format="rgb24"), width)
            if not pending:
                break
            index += 1
        for _, n in pending:  # past the end: the last frame
            out[n] = _jpeg(last.to_ndarray(format="rgb24"), width) if last is not None else ""
    return [o or "" for o in out]


def _jpeg(rgb: np.ndarray, width: int) -> str:
    height = max(2, int(rgb.shape[0] * width / rgb.shape[1]))
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    return _data_uri("image/jpeg", data.tobytes()) if ok else ""


def _parts_table(parts: dict, threshold: float) -> str:
    rows = []
    for name, score in parts.items():
        under = under_threshold(score, threshold)
        cell = "-" if score is None else f"{score:.1f}"
        note = f"under {threshold:g}" if under else ""
        rows.append(f"<tr class=\"part{' under' if under else ''}\" data-part=\"{name}\">"
                    f"<td>{name.replace('_', ' ')}</td><td class=\"value\">{cell}</td><td>{note}</td></tr>")
    return "<table id=\"parts\"><tr><th>part</th><th>score</th><th></th></tr>" + "".join(rows) + "</table>"


def _moments(moments: list[dict], thumbnails: list[str], seeks: list[float]) -> str:
    cards = []
    for m, thumb, at in zip(moments, thumbnails, seeks):
        cards.append(f"<div class=\"moment\" data-seek=\"{at:.3f}\"><img src=\"{thumb}\" alt=\"moment\">"
                     f"<div>step score {m['score']:.0f}</div>"
                     f"<div>{html.escape(moment_feedback(m))}</div></div>")
    return "<div class=\"moments\" id=\"moments\">" + "".join(cards) + "</div>"


def _followed(report: dict) -> str:
    """Whom the report followed in each video: the boxed thumbnails the job wrote, the track id
    and how it was chosen."""
    cards = []
    for role in ("reference", "attempt"):
        image = report.get("outputs", {}).get(f"{role}_person")
        picture = (f"<img src=\"{_data_uri('image/jpeg', Path(image).read_bytes())}\" alt=\"{role}\">"
                   if image and Path(image).exists() else "")
        cards.append(f"<div class=\"followed\" data-role=\"{role}\">{picture}"
                     f"<div>{role}: {html.escape(followed_line(report[role]))}</div></div>")
    return "<h2>Followed</h2><div class=\"moments\" id=\"followed\">" + "".join(cards) + "</div>"


def _score_line(score: float) -> str:
    """The big number, labelled, with the bands of the scale it is on."""
    bands = "; ".join(f"{lo:g}+ {words}" if lo else f"under {SCORE_BANDS[n - 1][0]:g} {words}"
                      for n, (lo, words) in enumerate(SCORE_BANDS))
    return (f"<div>movement score, 0-100</div><div class=\"score\" id=\"score\">{score:.1f}</div>"
            f"<div class=\"band\" id=\"band\">{html.escape(score_band(score))}</div>"
            f"<div class=\"bands\">{html.escape(bands)}</div>")


def _plot(figure, y_title: str = "score") -> str:
    """A plotly figure as a ``<div id="plot">`` with plotly's script inlined (no network)."""
    import plotly.io as pio

    figure.update_layout(height=320, margin={"l": 50, "r": 20, "t": 30, "b": 45}, template="plotly_white",
                         showlegend=False, yaxis={"range": [0, 105], "title": y_title})
    return pio.to_html(figure, include_plotlyjs=True, full_html=False, div_id="plot",
                       config={"displaylogo": False, "responsive": True})


def _page(title: str, score_line: str, video: Path, plot: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{score_line}"
            f"<video id=\"video\" controls preload=\"auto\" "
            f"src=\"{_data_uri('video/mp4', video.read_bytes())}\"></video>"
            f"<h2>Score</h2>{plot}{body}<script>{_SCRIPT}</script></body></html>")


def write_compare_page(path: str | Path, report: dict, video: str | Path) -> Path:
    """``report.html`` of a ``compare`` report: the side-by-side video (one frame per aligned step),
    the score per step (interactive), the parts table (parts under the threshold marked) and the worst moments as
    thumbnails that seek the video."""
    video = Path(video)
    rate = _video_rate(video)
    steps = {(s["reference_frame"], s["attempt_frame"]): n for n, s in enumerate(report["steps"])}
    seeks = [steps.get((m["reference_frame"], m["attempt_frame"]), 0) / rate for m in report["worst_moments"]]
    moments = (_moments(report["worst_moments"], _thumbnails(video, seeks), seeks) if report["worst_moments"]
               else f"<p id=\"moments-none\">{html.escape(no_moment_line(report['threshold']))}.</p>")
    legend = (f"<p class=\"legend\">Each point is a step of the alignment: its score is the mean of its part scores. "
              f"Dashed red line: the threshold, {report['threshold']:g}; a step under it is a worst moment. "
              f"In the video the reference is on the left and the attempt on the right; limbs of parts under "
              f"the threshold are red, the others green; the thin white skeleton over the attempt is the "
              f"reference's pose at that step, placed on the attempt's body.</p>")
    body = (f"{legend}{_followed(report)}<h2>Parts</h2>{_parts_table(report['parts'], report['threshold'])}"
            f"<h2>Worst moments</h2>{moments}")
    line = _score_line(report["score"])
    page = _page(f"attempt {Path(report['attempt']['path']).name} against reference "
                 f"{Path(report['reference']['path']).name}",
                 line, video, _step_plot(report, rate), body)
    Path(path).write_text(page)
    return Path(path)


def write_reps_page(path: str | Path, result: dict, video: str | Path) -> Path:
    """``report.html`` of a ``reps`` result: the attempt's video with each repetition drawn, the
    score per repetition, the table of repetitions (a row seeks the video to it), the parts of
    every repetition (under the threshold marked) and each one's worst moment as a thumbnail."""
    video = Path(video)
    threshold = result["threshold"]
    rows = []
    for r in result["reps"]:
        mark = " under" if r["flagged"] else ""
        rows.append(f"<tr class=\"seek rep{mark}\" data-seek=\"{r['start_time']:.3f}\"><td>{r['rep']}</td>"
                    f"<td>{clock(r['start_time'])}-{clock(r['end_time'])}</td><td>{r['duration']:.2f} s</td>"
                    f"<td class=\"value\">{r['score']:.1f}</td><td>{(r['worst_part'] or '-').replace('_', ' ')}</td>"
                    f"<td>{html.escape(moment_feedback(r['worst_moment']))}</td></tr>")
    table = ("<table id=\"reps\"><tr><th>rep</th><th>time</th><th>duration</th><th>score</th><th>worst part</th>"
             "<th>feedback</th></tr>" + "".join(rows) + "</table>")
    moments = [r["worst_moment"] for r in result["reps"] if r["worst_moment"]]
    seeks = [m["attempt_time"] for m in moments]
    parts = "".join(f"<h3>rep {r['rep']}</h3>{_parts_table(r['parts'], threshold)}" for r in result["reps"])
    body = (f"<h2>Repetitions</h2>{table}"
            f"<h2>Worst moment of each</h2>{_moments(moments, _thumbnails(video, seeks), seeks)}"
            f"<h2>Parts</h2>{parts}")
    flagged = f", {len(result['flagged'])} under {threshold:g}" if result["flagged"] else ""
    line = f"<div class=\"score\" id=\"score\">{result['count']} repetition(s){flagged}</div>"
    if "no_reps" in result:  # why none, and a link to the segment that came nearest
        nearest = result["no_reps"].get("nearest")
        seek = "" if nearest is None else f" class=\"seek\" data-seek=\"{nearest['start_time']:.3f}\""
        line += f"<p id=\"no-reps\"{seek}>{html.escape(no_reps_sentence(result['no_reps']))}</p>"
    page = _page(f"attempt {Path(result['attempt']['path']).name}: repetitions of reference "
                 f"{Path(result['reference']['path']).name}",
                 line, video, _rep_plot(result), body)
    Path(path).write_text(page)
    return Path(path)


def _step_plot(report: dict, rate: float) -> str:
    """Score per aligned step over the reference's time; a point seeks the side-by-side video
    (one frame per step) to its step."""
    import plotly.graph_objects as go

    steps, threshold = report["steps"], report["threshold"]
    hover = [f"reference {s['reference_time']:.2f}s, attempt {s['attempt_time']:.2f}s<br>score {s['score']:.1f}<br>"
             + "<br>".join(f"{k.replace('_', ' ')} {'-' if v is None else f'{v:.0f}'}" for k, v in s["parts"].items())
             for s in steps]
    figure = go.Figure(go.Scatter(x=[s["reference_time"] for s in steps], y=[s["score"] for s in steps],
                                  mode="lines+markers", marker={"size": 5},
                                  customdata=[n / rate for n in range(len(steps))], hovertext=hover,
                                  hoverinfo="text"))
    figure.add_hline(y=threshold, line_dash="dash", line_color="#c62828")
    figure.update_layout(xaxis={"title": "reference time (s)"})
    return _plot(figure, "step score")


def _rep_plot(result: dict) -> str:
    """One bar per repetition (red under the threshold); a bar seeks the video to its repetition."""
    import plotly.graph_objects as go

    reps, threshold = result["reps"], result["threshold"]
    figure = go.Figure(go.Bar(x=[r["rep"] for r in reps], y=[r["score"] for r in reps],
                              marker_color=["#c62828" if r["flagged"] else "#2e7d32" for r in reps],
                              customdata=[r["start_time"] for r in reps], text=[f"{r['score']:.0f}" for r in reps],
                              textposition="outside",
                              hovertext=[f"rep {r['rep']}: {clock(r['start_time'])}-{clock(r['end_time'])}, "
                                         f"score {r['score']:.1f}" for r in reps], hoverinfo="text"))
    figure.add_hline(y=threshold, line_dash="dash", line_color="grey")
    figure.update_layout(xaxis={"title": "repetition", "dtick": 1})
    return _plot(figure)


def _video_rate(video: Path) -> float:
    with av.open(str(video)) as container:
        return float(container.streams.video[0].average_rate or 25)

