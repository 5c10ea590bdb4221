"""``posescore live --page``: the page's server replays its state to every new client and keeps only
the newest frame; on real video played with ``--realtime``, headless chromium shows the skeleton,
the reference, the count and the table of the repetitions the command printed."""

import html
import http.client
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import page_data
from posescore.clients.live import LiveSession
from posescore.engine.media.encode import write_repetitions
from posescore.engine.media.samples import fetch_sports2d
from posescore.engine.reports.live_page import LivePage
from posescore.kernels import under_threshold
from posescore.kernels.skeleton import LIMB_PARTS, LIMBS, PART_NAMES
from test_live import arm_raise
from test_reps import REP_FIRST, REP_LAST, REST_FRAMES

EXE = str(Path(sys.executable).with_name("posescore"))
#: A short set: a repetition, one played backwards, one slower (speeds as test_reps.PLAN's).
PLAN = (1.0, None, 0.6)
#: The rate the video is sampled at: the pose model keeps up with it on a small CPU (a frame it
#: cannot keep up with is dropped, and a repetition may be found late or not at all).
FPS = 10


def read_events(response, until: str, timeout: float = 10.0) -> list[tuple[str, dict]]:
    """``(name, data)`` of the server-sent events read from ``response`` up to and with the first
    named ``until``."""
    buffer, events, deadline = b"", [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = response.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n") if ": " in line
                          and not line.startswith(":"))
            if "event" in fields:
                events.append((fields["event"], json.loads(fields["data"])))
                if fields["event"] == until:
                    return events
    raise AssertionError(f"no {until!r} event in {timeout:g} s: {[name for name, _ in events]}")


def frame_event(n: int, score: float) -> dict:
    """A frame event as the live model writes it: every part at ``score`` but the left arm, 30
    under, and the head, not scored."""
    parts = {name: score for name in PART_NAMES}
    parts["head"] = None  # not scored
    return {"event": "frame", "time": n / 30.0, "frame": n, "seen": True, "phase": (n % 20) / 19, "score": score,
            "worst_part": "left_arm", "parts": {**parts, "left_arm": score - 30.0}}


def test_the_page_replays_its_state_to_new_clients_and_keeps_the_newest_frame_only():
    rep = arm_raise()
    page = LivePage(threshold=80.0)
    try:
        assert page.url.startswith("http://127.0.0.1:") and page.port > 0
        page.reference(rep, 30.0, (np.full((480, 640, 3), 90, np.uint8) for _ in rep), name="ref.mp4")
        page.publish({"event": "start", "reference_frames": 20, "reference_duration": 0.633})
        frames = [np.full((360, 640, 3), n, np.uint8) for n in range(40)]
        for n, image in enumerate(frames):
            page.publish(frame_event(n, 95.0), image=image, pose=rep[n % 20])
        moment = {"worst_part": "left_arm", "joint": "left_elbow", "attempt_time": 1.0, "reference_time": 0.5,
                  "joint_angles": {"reference": 10.0, "attempt": 45.0, "difference": 35.0}}
        page.publish({"event": "rep", "rep": 1, "start_time": 0.1, "end_time": 0.8, "score": 71.5,
                      "worst_part": "left_arm", "worst_moment": moment, "backwards": True, "flagged": True})
        # Only the newest frame is held: the page object keeps one picture, whatever was published.
        assert page._image is frames[-1]
        # A new client (a page loaded or reloaded now) gets the state so far, in order, then what
        # happens next; the newest frame only.
        connection = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
        connection.request("GET", "/events")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
        events = read_events(response, until="frame")
        assert [name for name, _ in events] == ["reset", "reference", "start", "rep", "frame"]
        reference = events[1][1]
        assert reference["frames"] == 20 and len(reference["poses"]) == 20 and reference["height"] == 360
        row = events[3][1]
        said = "left arm: left elbow 35° more bent than the reference (attempt 0:01.0, reference 0:00.5)"
        assert row["line"] == row["feedback"] == said
        frame = events[4][1]
        assert frame["frame"] == 39 and frame["red"] == ["left_arm"] and frame["under"] is False
        assert frame["width"] == 640 and frame["image"].startswith("data:image/jpeg;base64,")
        assert len(frame["pose"]) == 17 and frame["parts"]["head"] is None
        page.publish(frame_event(40, 60.0), image=None, pose=None)  # no one seen, no picture
        (name, frame), = read_events(response, until="frame")
        assert name == "frame" and frame["under"] is True and frame["image"] is None and frame["pose"] is None
        # The other routes: the page (self-contained: nothing fetched from elsewhere), the frame,
        # the reference's frames; anything else is not found.
        page_html = _get(page.port, "/")[1].decode()
        assert "EventSource('/events')" in page_html and not re.search(r"(src|href)=\"?(https?:)?//", page_html)
        assert _get(page.port, "/reference/19.jpg")[1][:2] == b"\xff\xd8"
        assert _get(page.port, "/frame.jpg")[0] == 404  # the newest frame has no picture
        assert _get(page.port, "/reference/20.jpg")[0] == 404 and _get(page.port, "/etc/passwd")[0] == 404
        assert _get(page.port, "/", host="attacker.example")[0] == 403  # a name rebound to 127.0.0.1
        page.publish({"event": "end", "count": 1, "frames": 41, "dropped": 0})
    finally:
        page.close()
    # The connected client got the end before its stream closed; the server no longer answers.
    assert read_events(response, until="end")[-1] == ("end", {"count": 1, "frames": 41, "dropped": 0})
    assert response.read() == b""
    with pytest.raises(OSError):
        _get(page.port, "/")


def test_a_port_in_use_is_refused_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"page: cannot serve on 127.0.0.1:{port}"):
            LivePage(port=port)


def _get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the page in headless chromium, on real video ---------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """``(reference.mp4, attempt.mp4)``: a repetition of Sports2D's demo and a short set of them
    (PLAN, rests between), 640 px wide."""
    try:
        demo = fetch_sports2d()
    except RuntimeError as err:
        pytest.skip(f"Sports2D's demo video cannot be fetched: {err}")
    folder = tmp_path_factory.mktemp("live_page")
    reference, _ = write_repetitions(demo, folder / "reference.mp4", REP_FIRST, REP_LAST, [1.0], 0, width=640)
    attempt, _ = write_repetitions(demo, folder / "attempt.mp4", REP_FIRST, REP_LAST, PLAN, REST_FRAMES, width=640)
    return reference, attempt


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _chromium(url: str, *action: str) -> subprocess.Popen:
    """Headless chromium on ``url``, every host name but 127.0.0.1 unresolvable. With a virtual time
    budget it waits while a fetch is pending: the page's event stream keeps it open until the live
    stream ends and the page stops serving, so what it gives is the page after the whole stream."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    return subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=3000",
                             *action, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(dom: str) -> list[list[str]]:
    """The cells' text of each row of the page's table of repetitions."""
    body = re.search(r'<tbody id="reps">(.*?)</tbody>', dom, re.S).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_the_page_shows_the_stream_while_it_plays(videos, triton_server, tmp_path):
    from posescore.engine.reports.feedback import moment_feedback, no_moment_line

    reference, attempt = videos
    # The server's live model answers its first stream slowly (its stub loads its kernels): a
    # stream of its own first, so that the video's first frames are not dropped waiting for it.
    with LiveSession(triton_server.grpc_url, arm_raise(), reference_fps=30.0, fps=30.0) as warm:
        warm.send(arm_raise()[0], 0.0, 0)
        warm.end()
    port = _free_port()
    live = subprocess.Popen([EXE, "live", str(reference), "--source", str(attempt), "--realtime", "--fps", str(FPS),
                             "--json", "--page", "--page-port", str(port), "--url", triton_server.grpc_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events, errors, first_rep = [], [], threading.Event()

    def read_stdout():
        for line in live.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "rep":
                first_rep.set()

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: errors.extend(live.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        assert first_rep.wait(90), f"no repetition reported: {''.join(errors)[-2000:]}"
        url = f"http://127.0.0.1:{port}/"
        assert f"posescore live: page at {url}\n" in errors
        # The page is served while the video plays: a repetition is reported, the rest still to come.
        assert not any(e["event"] == "end" for e in events), "the stream ended before the page was opened"
        shot = tmp_path / "page.png"
        browser = _chromium(url, "--dump-dom", f"--screenshot={shot}", "--window-size=1400,900")
        dom, browser_errors = browser.communicate(timeout=120)
        assert live.wait(60) == 0, "".join(errors)[-2000:]
    finally:
        if live.poll() is None:
            live.kill()
    for reader in readers:
        reader.join(10)
    assert browser.returncode == 0, browser_errors[-2000:]

    reps = [e for e in events if e["event"] == "rep"]
    (end,) = [e for e in events if e["event"] == "end"]
    # Frames the pose model could not keep up with are dropped (and counted): on a busy machine
    # not every repetition may be found; the page must show those the command printed.
    assert end["count"] == len(reps) >= 1 and end["frames"] + end["dropped"] > 0
    # Frame events carry each part's score; the pose followed goes to the page only.
    assert all("parts" in e for e in events if e.get("score") is not None) and not any("pose" in e for e in events)

    data = page_data(dom)
    assert "errors" not in data, data["errors"]
    assert data["ready"] == "1" and data["ended"] == "1" and data["end-count"] == str(len(reps))
    # The count and the table are the repetitions the command printed, with reps' feedback.
    assert data["count"] == data["rows"] == str(len(reps))
    rows = _rows(dom)
    # The page rounds with JavaScript's toFixed, Python with its own: 80.25 may be 80.3 or 80.2.
    assert [row[:2] + row[3:] for row in rows] == [
        [str(r["rep"]), f"{r['start_time']:.2f}-{r['end_time']:.2f} s", (r["worst_part"] or "-").replace("_", " "),
         moment_feedback(r["worst_moment"]), "yes" if r["backwards"] else "no"] for r in reps]
    assert all(abs(float(row[2]) - r["score"]) <= 0.051 for row, r in zip(rows, reps))
    last = reps[-1]  # the last feedback line: its worst moment, or that it has none
    line = moment_feedback(last["worst_moment"]) if last["worst_moment"] else no_moment_line(80.0)
    assert f"rep {last['rep']} ({last['score']:.1f}): {html.escape(line, quote=False)}" in dom
    # The skeleton was drawn on the frames (pictures), limbs red where a part was under the
    # threshold; the reference drawn at the athlete's phase.
    assert int(data["frames-drawn"]) >= 1 and data["image-drawn"] == "1"
    assert 0 <= int(data["limbs-red"]) <= int(data["limbs-drawn"]) <= len(LIMBS)
    # The frame drawn last is the stream's last: its red limbs are those of its parts under 80.
    last_frame = [e for e in events if e["event"] == "frame"][-1]
    assert (int(data["limbs-drawn"]) > 0) == last_frame["seen"]
    if data["limbs-drawn"] == str(len(LIMBS)):
        parts = last_frame.get("parts") or {}
        red = sum(under_threshold(parts.get(PART_NAMES[p]), 80.0) for p in LIMB_PARTS)
        assert data["limbs-red"] == str(red), (data, parts)
    # The reference: its performer's rows, drawn at the last frame's phase.
    assert data["reference-frames"] == str(REP_LAST - REP_FIRST + 1)
    if last_frame.get("phase") is not None:
        assert data["reference-row"] == str(math.floor(last_frame["phase"] * (REP_LAST - REP_FIRST) + 0.5))

    # The screenshot is not blank: the frame, the skeletons and the table in many colours.
    import cv2

    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[:2] == (900, 1400)
    colours = np.unique(picture.reshape(-1, 3) // 8, axis=0)
    assert len(colours) > 500, len(colours)
