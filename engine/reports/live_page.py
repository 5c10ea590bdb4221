"""``posescore live --page``: one self-contained page served on 127.0.0.1 while a stream plays
(inline CSS and script, no CDN, nothing fetched beyond this server), kept current over
server-sent events.

The page shows the source's newest frame with the athlete's skeleton (limbs red where their part
scores under the threshold), the reference performer beside it at the athlete's phase, the running
score, the repetition count, the last feedback line and a table of the repetitions.

    page = LivePage(threshold=80.0)            # serving from here on: page.url
    page.reference(poses, fps, frames)         # the reference performer, once known
    page.publish(event, image=rgb, pose=pose)  # each live event (a frame's with its picture)
    page.close()                               # the server stops

Routes: ``/`` the page; ``/events`` the event stream (a new client first gets the state so far:
the reference, the repetitions, the newest frame, the end); ``/frame.jpg`` the newest frame;
``/reference/N.jpg`` the reference's frame N. Only the newest frame is kept: a client that falls
behind skips to it (no queue grows); every repetition reaches every client.
"""

from __future__ import annotations

import base64
import html
import json
import threading
import time as clock
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable
from urllib.parse import urlsplit

import cv2
import numpy as np

from posescore.engine.reports.feedback import moment_feedback, no_moment_line
from posescore.kernels import DEFAULT_MIN_CONFIDENCE, SCORE_THRESHOLD, under_threshold
from posescore.kernels.skeleton import LIMB_PARTS, LIMBS, PART_NAMES

HOST = "127.0.0.1"
#: The longest side of a source frame as the page receives it, in pixels (the skeleton keeps the
#: source's coordinates).
FRAME_MAX_SIDE = 960
#: The height of the reference's frames on the page, in pixels.
REFERENCE_HEIGHT = 360
#: Margin around the reference performer's extent, as a fraction of its size.
REFERENCE_MARGIN = 0.25
#: Seconds between comments on an idle event stream (they find clients that left).
KEEPALIVE_S = 10.0
#: Seconds :meth:`LivePage.close` waits for connected clients to receive the last events.
DRAIN_S = 1.0


class LivePage:
    """The page's state and its local server, started at construction on ``127.0.0.1:port``
    (0: a free port). ``threshold`` is the score under which a part is drawn red. An address that
    cannot be served raises ``OSError`` naming it."""

    def __init__(self, *, threshold: float = SCORE_THRESHOLD, port: int = 0, title: str = "posescore live"):
        self.threshold, self.title = float(threshold), title
        self._cond = threading.Condition()
        self._seq = 0                      # bumped by every change the clients must hear of
        self._reference: dict | None = None
        self._reference_jpegs: list[bytes] = []
        self._start: dict | None = None
        self._reps: list[dict] = []
        self._frame: dict | None = None    # the newest frame's message, its picture not yet encoded
        self._image: np.ndarray | None = None
        self._jpeg: tuple[int, bytes | None] = (-1, None)
        self._end: dict | None = None
        self._closed = False
        self._clients: dict[int, int] = {}  # each connected client's last seq sent
        try:
            self._server = ThreadingHTTPServer((HOST, int(port)), _Handler)
        except OSError as err:
            raise OSError(f"page: cannot serve on {HOST}:{port}: {err.strerror or err}") from None
        self._server.daemon_threads = True
        self._server.page = self
        self.port = self._server.server_address[1]
        self.url = f"http://{HOST}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-page", daemon=True)
        self._thread.start()

    def __enter__(self) -> "LivePage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the job tells -----------------------------------------------------------------------
    def reference(self, poses: np.ndarray, fps: float, frames: Iterable[np.ndarray] | None = None,
                  name: str = "reference") -> None:
        """Show the reference performer: ``poses [R, 17, 3]`` (pixels, the rows the stream is matched
        against, at ``fps``) and, when the reference is a video, its RGB ``frames`` of those rows
        (read one at a time, each kept as a small JPEG cropped to the performer)."""
        poses = np.asarray(poses, np.float32)
        seen = poses[..., 2] > DEFAULT_MIN_CONFIDENCE
        xy = poses[..., :2][seen]
        lo, hi = (xy.min(0), xy.max(0)) if len(xy) else (np.zeros(2), np.ones(2))
        pad = REFERENCE_MARGIN * max(float((hi - lo).max()), 1.0)
        x0, y0 = (int(v) for v in np.floor(lo - pad))
        x1, y1 = (int(v) for v in np.ceil(hi + pad))
        scale = REFERENCE_HEIGHT / (y1 - y0)
        jpegs = []
        for rgb in frames if frames is not None else ():
            crop = np.full((y1 - y0, x1 - x0, 3), 34, np.uint8)  # the box, outside the frame dark
            h, w = rgb.shape[:2]
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if cx1 > cx0 and cy1 > cy0:
                crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = rgb[cy0:cy1, cx0:cx1]
            jpegs.append(_jpeg(crop, REFERENCE_HEIGHT, side=0))
        shown = poses.copy()
        shown[..., :2] = np.where(seen[..., None], (poses[..., :2] - [x0, y0]) * scale, 0.0)
        message = {"name": name, "fps": float(fps), "frames": len(jpegs),
                   "width": max(1, round((x1 - x0) * scale)), "height": REFERENCE_HEIGHT,
                   "poses": [_pose_list(pose) for pose in shown]}
        with self._cond:
            self._reference, self._reference_jpegs = message, jpegs
            self._changed()

    def publish(self, event: dict, image: np.ndarray | None = None, pose: np.ndarray | None = None) -> None:
        """Show a live event (``start``, ``frame``, ``rep``, ``end``; others are ignored). A frame
        event comes with the source's RGB ``image`` (None: no picture, as for keypoints on stdin)
        and the ``pose [17, 3]`` followed (None: no one); only the newest frame is kept."""
        kind = event.get("event")
        with self._cond:
            if kind == "start":
                self._start = {k: event[k] for k in ("reference_frames", "reference_duration") if k in event}
                self._reps, self._end = [], None
            elif kind == "frame":
                parts = {name: _finite(value) for name, value in (event.get("parts") or {}).items()}
                score = _finite(event.get("score"))
                self._frame = {
                    "seq": self._seq + 1, "time": _finite(event.get("time")), "frame": event.get("frame"),
                    "seen": bool(event.get("seen")), "phase": _finite(event.get("phase")), "score": score,
                    "under": score is not None and under_threshold(score, self.threshold),
                    "worst_part": event.get("worst_part"), "parts": parts,
                    "red": [name for name, value in parts.items() if under_threshold(value, self.threshold)],
                    "pose": None if pose is None else _pose_list(pose),
                    "width": None if image is None else int(image.shape[1]),
                    "height": None if image is None else int(image.shape[0])}
                self._image = image
            elif kind == "rep":
                self._reps.append({
                    "rep": event["rep"], "start_time": event["start_time"], "end_time": event["end_time"],
                    "score": event["score"], "worst_part": event.get("worst_part"),
                    "feedback": moment_feedback(event.get("worst_moment")),
                    "line": moment_feedback(event["worst_moment"]) if event.get("worst_moment")
                    else no_moment_line(self.threshold),
                    "backwards": bool(event.get("backwards")), "flagged": bool(event.get("flagged"))})
            elif kind == "end":
                self._end = {k: event.get(k) for k in ("count", "frames", "dropped")}
            else:
                return
            self._changed()

    def hold(self) -> None:
        """Keep serving until Ctrl-C (or :meth:`close` from another thread)."""
        try:
            while not self._closed:
                clock.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def close(self, drain: float = DRAIN_S) -> None:
        """Stop serving: connected clients get what they have not yet had (waiting at most
        ``drain`` seconds), their streams end, and the server's thread is joined."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            deadline = clock.monotonic() + drain
            while any(sent < self._seq for sent in self._clients.values()) and clock.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - clock.monotonic()))
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- what the server reads ---------------------------------------------------------------------
    def _changed(self) -> None:
        self._seq += 1
        self._cond.notify_all()

    def _frame_jpeg(self) -> tuple[dict | None, bytes | None]:
        """The newest frame's message and its picture as a JPEG (encoded once, when first asked)."""
        with self._cond:
            frame, image, (seq, jpeg) = self._frame, self._image, self._jpeg
        if frame is None or image is None:
            return frame, None
        if seq != frame["seq"]:
            jpeg = _jpeg(image, FRAME_MAX_SIDE)
            with self._cond:
                if self._frame is frame:
                    self._jpeg = (frame["seq"], jpeg)
        return frame, jpeg

    def _messages(self, sent: dict) -> list[tuple[str, dict]]:
        """What a client whose cursor is ``sent`` has not had yet, as ``(event name, data)``;
        ``sent`` is moved past it."""
        out = []
        with self._cond:
            reference, start, reps, end = self._reference, self._start, list(self._reps), self._end
            sent["seq"] = self._seq
        if reference is not None and not sent.get("reference"):
            out.append(("reference", reference))
            sent["reference"] = True
        if start is not None and sent.get("start") is not start:
            out.append(("start", start))
            sent["start"], sent["reps"], sent["end"] = start, 0, None
        for row in reps[sent.get("reps", 0):]:
            out.append(("rep", row))
        sent["reps"] = len(reps)
        frame, jpeg = self._frame_jpeg()
        if frame is not None and frame["seq"] != sent.get("frame"):
            image = None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
            out.append(("frame", {**frame, "image": image}))
            sent["frame"] = frame["seq"]
        if end is not None and sent.get("end") is not end:
            out.append(("end", end))
            sent["end"] = end
        return out

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        """Serve one client's event stream: the state so far, then each change, until the page
        closes or the client leaves."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        key, sent = id(handler), {"seq": -1}
        with self._cond:
            self._clients[key] = -1
        try:
            handler.wfile.write(b"retry: 1000\n\n" + _sse("reset", {}))
            while True:
                with self._cond:
                    if not self._closed and sent["seq"] == self._seq:
                        self._cond.wait(KEEPALIVE_S)
                    closing = self._closed
                messages = self._messages(sent)
                data = b"".join(_sse(name, body) for name, body in messages) or b": keepalive\n\n"
                handler.wfile.write(data)
                handler.wfile.flush()
                with self._cond:
                    self._clients[key] = sent["seq"]
                    self._cond.notify_all()
                    if closing and sent["seq"] == self._seq:
                        break
        except OSError:
            pass  # the client left
        finally:
            with self._cond:
                self._clients.pop(key, None)
                self._cond.notify_all()

    def html(self) -> bytes:
        """The page: markup, style and script in one document; its settings (threshold, skeleton)
        inlined as JSON."""
        settings = {"threshold": self.threshold, "limbs": [list(limb) for limb in LIMBS],
                    "limbParts": [PART_NAMES[p] for p in LIMB_PARTS], "minConfidence": DEFAULT_MIN_CONFIDENCE}
        return _PAGE.replace("{title}", html.escape(self.title)).replace(
            "{settings}", json.dumps(settings).replace("</", "<\\/")).encode()


class _Handler(BaseHTTPRequestHandler):
    """The page's routes (GET only, asked for by the loopback address or localhost); no logging."""

    server_version = "posescore-live"
    timeout = 30  # a client that stops reading is dropped

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        page: LivePage = self.server.page
        path = urlsplit(self.path).path
        if self.headers.get("Host") not in (f"{HOST}:{page.port}", f"localhost:{page.port}"):
            self._send(403, "text/plain", b"this page answers for 127.0.0.1 and localhost only")  # no DNS rebinding
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", page.html())
        elif path == "/events":
            page._stream(self)
        elif path == "/frame.jpg":
            _, jpeg = page._frame_jpeg()
            if jpeg is None:
                self._send(404, "text/plain", b"no frame yet")
            else:
                self._send(200, "image/jpeg", jpeg)
        elif path.startswith("/reference/") and path.endswith(".jpg") and path[11:-4].isdigit() and \
                int(path[11:-4]) < len(page._reference_jpegs):
            self._send(200, "image/jpeg", page._reference_jpegs[int(path[11:-4])])
        else:
            self._send(404, "text/plain", b"not found")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def _sse(name: str, body: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(body, separators=(',', ':'), allow_nan=False)}\n\n".encode()


def _finite(value) -> float | None:
    """``value`` as a float, None when it is missing or not finite (the page's JSON has no NaN)."""
    return float(value) if value is not None and np.isfinite(value) else None


def _pose_list(pose: np.ndarray) -> list[list[float]]:
    """``[[x, y, confidence]] * 17`` rounded for the page; a keypoint that is not finite is missing."""
    pose = np.asarray(pose, np.float64)
    pose = np.where(np.isfinite(pose).all(-1, keepdims=True), pose, 0.0)
    return [[round(float(x), 1), round(float(y), 1), round(float(c), 3)] for x, y, c in pose]


def _jpeg(rgb: np.ndarray, size: int, side: int = -1) -> bytes:
    """``rgb`` as JPEG bytes, scaled down so its longest side (``side=-1``) or its height
    (``side=0``) is at most ``size`` pixels."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w) if side == -1 else size / h
    if scale < 1.0 or side == 0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("page: a frame could not be encoded as JPEG")
    return data.tobytes()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 8px; } .status { color: #555; font-size: 13px; }
.views { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
.view { background: #fff; border: 1px solid #ccc; padding: 6px; }
.view h2 { font-size: 14px; margin: 0 0 4px; color: #444; }
canvas { display: block; background: #222; max-width: 100%; }
#athlete { max-height: 62vh; } #reference { height: min(62vh, 360px); }
.numbers { display: flex; gap: 28px; align-items: baseline; margin: 10px 0; }
.big { font-size: 36px; font-weight: 600; } .label { color: #666; font-size: 13px; }
.under { color: #c62828; } #feedback { font-size: 16px; margin: 4px 0 12px; }
table { border-collapse: collapse; background: #fff; }
td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
tr.flagged td { color: #c62828; }
</style></head>
<body>
<h1>{title}</h1>
<div class="status" id="status">connecting ...</div>
<div class="numbers">
  <div><div class="label">running score</div><div class="big" id="score">-</div></div>
  <div><div class="label">repetitions</div><div class="big" id="count">0</div></div>
  <div><div class="label">phase</div><div class="big" id="phase">-</div></div>
  <div><div class="label">worst part</div><div class="big" id="worst">-</div></div>
</div>
<div id="feedback">no repetition yet</div>
<div class="views">
  <div class="view"><h2>athlete</h2><canvas id="athlete" width="640" height="360"></canvas></div>
  <div class="view"><h2 id="reference-title">reference</h2>
    <canvas id="reference" width="240" height="360"></canvas></div>
</div>
<h2>Repetitions</h2>
<table><thead><tr><th>#</th><th>start-end</th><th>score</th><th>worst part</th><th>feedback</th>
<th>backwards</th></tr></thead><tbody id="reps"></tbody></table>
<script>
const SETTINGS = {settings};
const $ = id => document.getElementById(id);
const mark = (key, value) => { document.body.dataset[key] = String(value); };
const errors = [];
window.addEventListener('error', e => { errors.push(String(e.message)); mark('errors', errors.join('; ')); });
const RED = '#e61e1e', GREEN = '#28c846', REF = '#4fc3f7';
let reference = null, refImages = [], framesDrawn = 0, redFrames = 0, drawnSeq = 0, extent = null;
let ended = false, phase = 0;

function seen(p) { return p && p[2] > SETTINGS.minConfidence; }

function drawPose(ctx, pose, colourOf, map, width) {
  let drawn = 0, red = 0;
  ctx.lineCap = 'round';
  SETTINGS.limbs.forEach(([a, b], n) => {
    if (!seen(pose[a]) || !seen(pose[b])) return;
    const colour = colourOf(n);
    const [ax, ay] = map(pose[a]), [bx, by] = map(pose[b]);
    ctx.strokeStyle = colour; ctx.lineWidth = width;
    ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
    drawn += 1; if (colour === RED) red += 1;
  });
  ctx.fillStyle = '#fff';
  for (const p of pose) {
    if (!seen(p)) continue;
    const [x, y] = map(p);
    ctx.beginPath(); ctx.arc(x, y, width * 0.8, 0, 2 * Math.PI); ctx.fill();
  }
  return [drawn, red];
}

function drawAthlete(msg, img) {
  if (msg.seq < drawnSeq) return;  // a newer frame is already drawn
  drawnSeq = msg.seq;
  const canvas = $('athlete'), ctx = canvas.getContext('2d');
  let map = p => [p[0], p[1]];
  if (img) {
    if (canvas.width !== msg.width || canvas.height !== msg.height) {
      canvas.width = msg.width; canvas.height = msg.height;
    }
    ctx.drawImage(img, 0, 0, msg.width, msg.height);
  } else {
    // No picture (keypoints on stdin): the skeleton on a blank canvas, fitted to every pose so far.
    canvas.width = 480; canvas.height = 480;
    ctx.fillStyle = '#222'; ctx.fillRect(0, 0, 480, 480);
    if (msg.pose) {
      for (const p of msg.pose.filter(seen)) {
        extent = extent ? [Math.min(extent[0], p[0]), Math.min(extent[1], p[1]), Math.max(extent[2], p[0]),
                           Math.max(extent[3], p[1])] : [p[0], p[1], p[0], p[1]];
      }
    }
    if (extent) {
      const size = Math.max(extent[2] - extent[0], extent[3] - extent[1], 1) * 1.2;
      const s = 480 / size, cx = (extent[0] + extent[2]) / 2, cy = (extent[1] + extent[3]) / 2;
      map = p => [240 + (p[0] - cx) * s, 240 + (p[1] - cy) * s];
    }
  }
  let drawn = 0, red = 0;
  if (msg.pose) {
    const width = Math.max(3, Math.round(Math.max(canvas.width, canvas.height) / 200));
    [drawn, red] = drawPose(ctx, msg.pose, n => msg.red.includes(SETTINGS.limbParts[n]) ? RED : GREEN, map, width);
  }
  framesDrawn += 1; if (red) redFrames += 1;
  mark('framesDrawn', framesDrawn); mark('limbsDrawn', drawn); mark('limbsRed', red); mark('redFrames', redFrames);
  mark('imageDrawn', img ? 1 : 0);
}

function drawReference() {
  if (!reference || !reference.poses.length) return;
  const canvas = $('reference'), ctx = canvas.getContext('2d');
  canvas.width = reference.width; canvas.height = reference.height;
  const row = Math.round(phase * (reference.poses.length - 1));
  const img = refImages[row];
  ctx.fillStyle = '#222'; ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (img && img.complete && img.naturalWidth) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  drawPose(ctx, reference.poses[row], () => REF, p => [p[0], p[1]], 3);
  mark('referenceRow', row);
}

function fmt(x, digits) { return (x === null || x === undefined) ? '-' : Number(x).toFixed(digits); }
function cell(row, text) { const td = document.createElement('td'); td.textContent = text; row.appendChild(td); }

function setCount(n) { $('count').textContent = String(n); mark('count', n); mark('rows', $('reps').rows.length); }

const events = new EventSource('/events');
events.onopen = () => mark('connected', 1);
events.onerror = () => {
  mark('connected', 0);
  $('status').textContent = ended ? 'the stream ended; the page is no longer served' : 'disconnected, retrying ...';
};
function clearReps() { $('reps').replaceChildren(); setCount(0); $('feedback').textContent = 'no repetition yet'; }
events.addEventListener('reset', clearReps);
events.addEventListener('reference', e => {
  reference = JSON.parse(e.data);
  refImages = [];
  for (let n = 0; n < reference.frames; n++) {
    const img = new Image();
    img.onload = drawReference;  // the row shown may be this one
    img.src = '/reference/' + n + '.jpg';
    refImages.push(img);
  }
  $('reference-title').textContent = 'reference: ' + reference.name;
  drawReference();
  mark('referenceFrames', reference.poses.length);
});
events.addEventListener('start', () => {
  ended = false; $('status').textContent = 'playing';
  clearReps();
});
events.addEventListener('frame', e => {
  const msg = JSON.parse(e.data);
  if (!ended) $('status').textContent = 'playing: ' + fmt(msg.time, 2) + ' s, frame ' + msg.frame;
  if (msg.score !== null && msg.score !== undefined) {
    $('score').textContent = fmt(msg.score, 1);
    $('score').className = 'big' + (msg.under ? ' under' : '');
    $('phase').textContent = fmt(msg.phase, 2);
    $('worst').textContent = (msg.worst_part || '-').replace('_', ' ');
    phase = msg.phase;
    drawReference();
  } else if (!msg.seen) {
    $('worst').textContent = 'no one in view';
  }
  if (msg.image) {
    const img = new Image();
    img.onload = () => drawAthlete(msg, img);
    img.src = msg.image;
  } else {
    drawAthlete(msg, null);
  }
});
events.addEventListener('rep', e => {
  const r = JSON.parse(e.data);
  const row = document.createElement('tr');
  if (r.flagged) row.className = 'flagged';
  row.dataset.rep = r.rep;
  cell(row, r.rep);
  cell(row, fmt(r.start_time, 2) + '-' + fmt(r.end_time, 2) + ' s');
  cell(row, fmt(r.score, 1));
  cell(row, (r.worst_part || '-').replace('_', ' '));
  cell(row, r.feedback);
  cell(row, r.backwards ? 'yes' : 'no');
  $('reps').appendChild(row);
  $('feedback').textContent = 'rep ' + r.rep + ' (' + fmt(r.score, 1) + '): ' + r.line;
  $('feedback').className = r.flagged ? 'under' : '';
  setCount($('reps').rows.length);
});
events.addEventListener('end', e => {
  const end = JSON.parse(e.data);
  ended = true;
  $('status').textContent = 'ended: ' + end.count + ' repetition(s) in ' + end.frames + ' frames' +
    (end.dropped ? ', ' + end.dropped + ' dropped to keep up' : '');
  mark('ended', 1); mark('endCount', end.count);
});
mark('ready', 1);
</script>
</body></html>
"""
