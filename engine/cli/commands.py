"""What each of the engine's commands does (``info``, ``serve``, the jobs, ``archive``...), and :func:`run`,
which runs one; their options are ``engine.cli.parser``'s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from posescore.engine.reports.feedback import followed_sentence, format_parts


def info_command(args) -> int:
    """Print the versions and the backends the kernels can use on this machine."""
    import numba
    import numpy as np

    from posescore.kernels import cupy_or_none

    cp = cupy_or_none()
    gpu = None
    if cp is not None:
        try:
            gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        except Exception:  # noqa: BLE001 - CuPy present but no usable device
            gpu = None
    info = {
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "cupy": getattr(cp, "__version__", None),
        "gpu": gpu,
        "backend": "GPU (CuPy arrays) and CPU (NumPy arrays)" if gpu else "CPU (NumPy + numba)",
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:14} {value}")
    return 0


def models_export_command(args) -> int:
    """Export the pose model to ONNX and convert the landmark model, each unless it is current;
    print where they are."""
    from posescore.engine.serving.export import (ExportError, export_landmark_model, export_pose_model, is_current,
                                                 landmark_model_is_current, landmark_onnx_path, onnx_path)

    models = ((is_current, onnx_path, export_pose_model, "exported"),
              (landmark_model_is_current, landmark_onnx_path, export_landmark_model, "converted"))
    for current_check, path_of, export, done in models:
        try:
            current = not args.force and current_check(args.model_repository)
            path = path_of(args.model_repository) if current else export(args.model_repository, force=args.force)
        except ExportError as err:
            print(f"posescore: {err}", file=sys.stderr)
            return 1
        print(f"{path} ({'up to date' if current else done})")
    return 0


def _event_text(event: dict) -> str:
    """A supervisor event as a line: ``what: key value, ...``."""
    detail = ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("time", "what"))
    return f"{event['what']}: {detail}"


def serve_command(args) -> int:
    """Run the embedded Triton server in the foreground, supervised, until interrupted."""
    import signal
    import time

    from posescore.engine.serving.server import ServerError, TritonServer
    from posescore.engine.serving.supervisor import Supervisor

    server = TritonServer(args.model_repository, grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, archive_root=args.archive_root,
                          archive_shard=args.archive_shard, log_verbose=args.log_verbose, http=args.http)
    # SIGTERM ends the foreground server like Ctrl-C does, through the same clean stop.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    def notify(event):
        print(f"posescore serve: {_event_text(event)}", file=sys.stderr, flush=True)

    try:
        server.start()
        print(f"gRPC     {server.grpc_url}" + (f"\nHTTP     {server.http_url}" if server.http else "")
              + f"\nmetrics  {server.metrics_url}\nlog      {server.log_path}"
              + (f"\nshard    {server.archive_shard} of every archive" if server.archive_shard else ""), flush=True)
        # Supervised: a dead server is started again, a model whose stub died is reloaded.
        with Supervisor(server, notify=notify):
            while True:
                time.sleep(3600)
    except ServerError as err:
        print(f"posescore: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def front_command(args) -> int:
    """Run the gRPC front (engine.serving.grpc_front) in the foreground until interrupted."""
    import os
    import signal
    import time

    from posescore.engine.serving.grpc_front import GrpcFront, request_bounds
    from posescore.engine.serving.server import repository_models

    key = os.environ.get(args.key_env, "")
    if not key:
        print(f"posescore front: set {args.key_env} to the key of tritonserver's "
              f"--grpc-restricted-protocol=...:posescore-front=KEY", file=sys.stderr)
        return 1
    try:
        listen_host, listen_port = _host_port(args.listen, "--listen")
        backend_host, backend_port = _host_port(args.backend, "--backend")
        bounds = request_bounds(args.model_repository, repository_models(args.model_repository))
        front = GrpcFront(listen_host, listen_port, backend_port, key=key, bounds=bounds,
                          backend_host=backend_host).start()
    except (ValueError, OSError) as err:  # a BoundError is a ValueError
        print(f"posescore front: {err}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"gRPC     {args.listen} -> {args.backend}; bounds: "
          + ", ".join(f"{m} {b:,} bytes" for m, b in bounds.items()), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        front.stop()


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option}: expected HOST:PORT, got {text!r}")
    return host, int(port)


def probe_command(args) -> int:
    """Send each model its tiny real request (what the supervisor asks): exit 0 when every one
    answered, 1 naming those that did not. A liveness check that sees a dead python stub, which
    Triton's ready endpoints do not."""
    from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, repository_models
    from posescore.engine.serving.supervisor import probe_model

    failing = []
    for model in args.model or repository_models(DEFAULT_MODEL_REPOSITORY):
        state, problem = probe_model(args.url, model, args.timeout)
        print(f"{model}: {state}" + (f" ({problem})" if problem else ""))
        if state != "alive":
            failing.append(model)
    if failing:
        print(f"posescore probe: {', '.join(failing)} not answering at {args.url}", file=sys.stderr)
        return 1
    return 0


class _Progress:
    """A progress bar on stderr (tqdm: frames done, rate, time left) for decoding and inference;
    none with --quiet or when stderr is not a terminal (CI logs, pipes). One callback serves
    several videos in turn: a count that goes back (the next video) starts a new bar."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.bar = label, None
        self.enabled = not quiet and sys.stderr.isatty()

    def __call__(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is not None and done < self.bar.n:
            self.close()
        if self.bar is not None and total and self.bar.total != total:  # the frame count was an estimate
            self.bar.total = total
        if self.bar is None:
            self.bar = tqdm(total=total or None, desc=self.label, unit="frame", file=sys.stderr, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _emit(args, result, lines) -> None:
    """Print ``result`` as JSON with --json, else the human-readable ``lines``."""
    if args.json:
        from posescore.engine.media.pose_files import json_text

        print(json_text(result, indent=1))
    else:
        for line in lines:
            print(line)


#: How long a job waits for a --url server that does not answer before it fails, naming the URL.
#: Once a server has answered, the clients ride through its restarts for --timeout.
CONNECT_TIMEOUT_S = 5.0


def _check_server(url: str, wait_s: float = CONNECT_TIMEOUT_S) -> None:
    """Return once the server at ``url`` answers gRPC; a PoseScoreError naming the URL and the
    reason when it does not within ``wait_s`` seconds."""
    import time

    import tritonclient.grpc as grpcclient

    from posescore.clients import PoseScoreError

    deadline, reason = time.monotonic() + wait_s, "no answer"
    while True:
        client = None
        try:
            client = grpcclient.InferenceServerClient(url)
            if client.is_server_live(client_timeout=min(2.0, wait_s)):
                return
            reason = "the server says it is not live"
        except Exception as err:  # noqa: BLE001 - any failure to talk to it is the reason
            text = err.message() if callable(getattr(err, "message", None)) else str(err)
            reason = str(text).split("; last error:")[0]
        finally:
            if client is not None:
                client.close()
        if time.monotonic() >= deadline:
            raise PoseScoreError(f"--url {url}: no posescore server answers there within {wait_s:g} s ({reason})")
        time.sleep(0.25)


def _job_models(landmarks: bool = False) -> list[str]:
    """The models a job's embedded server loads: every model of the repository but ``landmarks``
    (BlazePose, for the jobs that ask for it)."""
    from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, repository_models

    return [m for m in repository_models(DEFAULT_MODEL_REPOSITORY) if landmarks or m != "landmarks"]


def _with_client(args, job, *, landmarks: bool = False):
    """Run ``job(client)`` against --url (which must answer within CONNECT_TIMEOUT_S), or an
    embedded server started for the job (with the ``landmarks`` model when ``landmarks``)."""
    from posescore.clients import PoseScoreClient

    from posescore.engine.serving.supervisor import server_url

    if args.url:
        _check_server(args.url)
    elif not args.quiet:
        print("starting the embedded Triton server ...", file=sys.stderr, flush=True)

    def notify(event):  # the embedded server's supervisor: what it mended
        if not args.quiet:
            print(f"\nposescore: embedded server: {_event_text(event)}", file=sys.stderr, flush=True)

    with server_url(args.url, notify=notify, models=_job_models(landmarks)) as url, \
            PoseScoreClient(url, timeout=args.timeout) as client:
        return job(client)


def _needs_server(*paths) -> bool:
    from posescore.engine.media.pose_files import is_poses_json

    return not all(p is None or is_poses_json(p) for p in paths)


def _run_job(args, job, *inputs, landmarks: bool = False):
    """``job(client)`` with a server only when an input is not a pose JSON file."""
    if _needs_server(*inputs):
        return _with_client(args, job, landmarks=landmarks)
    return job(None)


def pose_command(args) -> int:
    from posescore.engine.jobs.pose import pose_job

    sheet = Path(args.output).with_suffix(".tracks.png") if args.output else None
    landmarks = args.landmarks or args.trc is not None
    records = _run_job(args, lambda c: pose_job(args.input, c, args.output, args.fps,
                                                _Progress("decoded and inferred", args.quiet), sheet=sheet,
                                                landmarks=landmarks, trc=args.trc, markers=args.markers),
                       args.input, landmarks=landmarks)
    if args.output:
        frames = len({r["image_id"] for r in records})
        tracks = sheet if sheet is not None and sheet.exists() else None
        _emit(args, {"output": args.output, "records": len(records), "tracks": str(tracks) if tracks else None,
                     "trc": args.trc},
              [f"{len(records)} poses{' with landmarks' if landmarks else ''} in {frames} frame(s) written to "
               f"{args.output}"]
              + ([f"tracks: {tracks} (a frame of each, its id: for --person)"] if tracks else [])
              + ([f"OpenSim markers ({args.markers}): {args.trc}"] if args.trc else []))
    else:
        from posescore.engine.media.pose_files import json_text

        print(json_text(records))
    return 0


def _check_movements(args) -> None:
    """Refuse an image as REFERENCE or ATTEMPT before any server starts or anything is decoded."""
    from posescore.engine.jobs.inputs import check_movement_source

    check_movement_source(args.reference, "reference")
    check_movement_source(args.attempt, "attempt")


def compare_command(args) -> int:
    from posescore.engine.reports.feedback import moment_feedback, no_moment_line, verdict
    from posescore.engine.jobs.compare import compare_job

    _check_movements(args)
    report = _run_job(args, lambda c: compare_job(
        args.reference, args.attempt, c, out_dir=args.out, threshold=args.threshold, mirror=args.mirror,
        fps=args.fps, window=args.window, csv=args.csv, progress=_Progress("decoded and inferred", args.quiet),
        person=args.person, reference_person=args.reference_person, three_d=args.three_d),
        args.reference, args.attempt, landmarks=args.three_d)
    lines = [f"score {verdict(report['score'])}  (DTW distance {report['distance']:.3f}, "
             f"{len(report['steps'])} aligned steps{', mirrored' if report['mirrored'] else ''})",
             f"parts  {format_parts(report['parts'])}",
             followed_sentence(report)]
    if report["parts_under_threshold"]:
        lines.append(f"under {report['threshold']:g}: {', '.join(report['parts_under_threshold'])}")
    if report["worst_moments"]:
        lines.append(f"worst moments (steps under {report['threshold']:g}; a step scores the mean of its parts):")
        for m in report["worst_moments"]:
            lines.append(f"  step {m['score']:5.1f}  {moment_feedback(m)}")
    else:
        lines.append(no_moment_line(report["threshold"]))
    for name, path in report.get("outputs", {}).items():
        lines.append(f"{name:7} {path}")
    _emit(args, report, lines)
    return 0


def gait_command(args) -> int:
    from posescore.engine.jobs.gait import gait_job

    report = _run_job(args, lambda c: gait_job(
        args.input, c, height=args.height, treadmill_kmh=args.treadmill_speed, person=args.person, out=args.out,
        csv=args.csv, fps=args.fps, progress=_Progress("decoded and inferred", args.quiet)),
        args.input, landmarks=True)
    s = report["summary"]

    def figure(name, unit, scale=1.0):
        value = s.get(name)
        if not value:
            return f"{name}: -"
        left = "-" if value["left"] is None else f"{value['left'] * scale:.0f}"
        right = "-" if value["right"] is None else f"{value['right'] * scale:.0f}"
        asym = s["asymmetry_percent"].get(name)
        return (f"{name.rsplit('_', 1)[0].replace('_', ' ')}: {value['mean'] * scale:.0f} {unit} (left {left}, right "
                f"{right}" + (f", asymmetry {asym:.0f}%)" if asym is not None else ")"))

    lines = [f"{report['mode']}, {s['steps']} steps, cadence {s['cadence_steps_per_min']:.0f} steps/min"
             + (f", {s['speed_km_per_h']:.1f} km/h" if "speed_km_per_h" in s else ""),
             figure("contact_time_s", "ms", 1000),
             figure("flight_time_s", "ms", 1000) if report["mode"] == "running" else figure("double_support_s", "ms", 1000),
             figure("knee_flexion_at_contact_deg", "deg"), figure("overstride_cm", "cm"),
             figure("vertical_oscillation_cm", "cm"), figure("trunk_lean_deg", "deg"),
             "foot strike: " + ", ".join(f"{k} {v}" for k, v in s["foot_strike"].items() if v)]
    lines += [f"note: {n}" for n in report["notes"]]
    for name, path in report.get("outputs", {}).items():
        lines.append(f"{name:7} {path}")
    _emit(args, report, lines)
    return 0


def reps_command(args) -> int:
    from posescore.engine.reports.feedback import moment_feedback, no_reps_sentence
    from posescore.engine.jobs.reps import reps_job

    _check_movements(args)
    result = _run_job(args, lambda c: reps_job(
        args.reference, args.attempt, c, start=args.start, end=args.end, threshold=args.threshold,
        mirror=args.mirror, fps=args.fps, min_ratio=args.min_ratio, max_ratio=args.max_ratio,
        min_score=args.min_score, out_dir=args.out, csv=args.csv, person=args.person,
        reference_person=args.reference_person, progress=_Progress("decoded and inferred", args.quiet),
        three_d=args.three_d), args.reference, args.attempt, landmarks=args.three_d)
    lines = [followed_sentence(result),
             f"{'rep':>3}  {'start-end':>15}  {'duration':>8}  {'score':>5}  {'worst part':10}  feedback"]
    for r in result["reps"]:
        mark = "  <- under " + f"{result['threshold']:g}" if r["flagged"] else ""
        lines.append(f"{r['rep']:3d}  {r['start_time']:6.2f}-{r['end_time']:6.2f}s  {r['duration']:7.2f}s  "
                     f"{r['score']:5.1f}  {r['worst_part'] or '-':10}  {moment_feedback(r['worst_moment'])}{mark}")
    flagged = f", {len(result['flagged'])} under {result['threshold']:g}" if result["flagged"] else ""
    lines.append(f"{result['count']} repetition(s){flagged}")
    if "no_reps" in result:
        lines.append(no_reps_sentence(result["no_reps"]))
    for name, path in result.get("outputs", {}).items():
        lines.append(f"{name:7} {path}")
    _emit(args, result, lines)
    return 0


def live_command(args) -> int:
    """``posescore live``: with --json one event per line as it happens, else one live line and a
    line per repetition."""
    from posescore.engine.jobs.inputs import check_movement_source
    from posescore.engine.jobs.live import live_job
    from posescore.engine.reports.feedback import moment_feedback

    check_movement_source(args.reference, "reference")
    from posescore.engine.media.live_source import is_live_source

    if args.source != "-" and not is_live_source(args.source) and not Path(args.source).exists():
        raise ValueError(f"--source {args.source}: no such file (a camera is /dev/videoN, a stream rtsp://, "
                         f"srt://, udp:// or http(s)://)")
    for option, given in (("--page-port", args.page_port is not None), ("--page-hold", args.page_hold)):
        if given and not args.page:
            raise ValueError(f"{option} is an option of --page: add --page")
    if args.page_port is not None and not 0 <= args.page_port <= 65535:
        raise ValueError(f"--page-port {args.page_port}: expected a port number 0-65535 (0: a free one)")
    terminal = sys.stdout.isatty() and not args.json

    def emit(event: dict) -> None:
        if args.json:
            print(json.dumps(event, separators=(",", ":")), flush=True)
            return
        kind = event["event"]
        if kind == "frame" and terminal:
            seen = (f"phase {event['phase']:.2f}  score {event['score']:5.1f}  worst {event['worst_part'] or '-'}"
                    if event["seen"] else "no one in view")
            print(f"\r{event['time']:7.2f}s  {seen:60}", end="", flush=True)
        elif kind == "rep":
            mark = f"  <- under {args.threshold:g}" if event["flagged"] else ""
            print(f"{chr(13) if terminal else ''}rep {event['rep']}: {event['start_time']:.2f}-{event['end_time']:.2f}s "
                  f"score {event['score']:.1f}{' (backwards)' if event['backwards'] else ''}  "
                  f"{moment_feedback(event['worst_moment'])}{mark}", flush=True)

    page = None
    if args.page:
        from posescore.engine.reports.live_page import LivePage

        page = LivePage(threshold=args.threshold, port=args.page_port or 0,
                        title=f"posescore live: {Path(args.reference).name}")
        print(f"posescore live: page at {page.url}", file=sys.stderr, flush=True)
    try:
        result = _with_client(args, lambda c: live_job(
            args.reference, args.source, c, emit=emit, start=args.start, end=args.end,
            reference_person=args.reference_person, person=args.person, realtime=args.realtime, fps=args.fps,
            threshold=args.threshold, mirror=args.mirror, min_ratio=args.min_ratio, max_ratio=args.max_ratio,
            min_score=args.min_score, page=page, reconnect=args.reconnect))
        if not args.json:
            flagged = [r["rep"] for r in result["reps"] if r["flagged"]]
            under = f", {len(flagged)} under {args.threshold:g}" if flagged else ""
            dropped = f", {result['dropped']} frame(s) dropped to keep up" if result["dropped"] else ""
            print(f"{chr(13) if terminal else ''}{result['count']} repetition(s){under} in {result['frames']} frames"
                  f"{dropped}", flush=True)
        if page is not None and args.page_hold:
            print(f"posescore live: the stream ended; serving {page.url} until Ctrl-C", file=sys.stderr, flush=True)
            page.hold()
    finally:
        if page is not None:
            page.close()
    return 0


def find_command(args) -> int:
    from posescore.engine.jobs.find import find_job

    result = _run_job(args, lambda c: find_job(args.pose, args.video, c, k=args.k, mirror=args.mirror,
                                               out_dir=args.out, fps=args.fps, person=args.person,
                                               min_score=args.min_score, three_d=args.three_d,
                                               progress=_Progress("decoded and inferred", args.quiet)),
                      args.pose, args.video, landmarks=args.three_d)
    if result["moments"]:
        lines = [f"{'time':>8}  {'frame':>6}  {'track':>5}  {'score':>5}  parts"]
        lines += [f"{m['time']:7.2f}s  {m['frame']:6d}  {m['track']:5d}  {m['score']:5.1f}  {format_parts(m['parts'])}"
                  for m in result["moments"]]
    else:
        lines = [f"nothing similar: the best moment scores {result['best_score']:.1f}, under {args.min_score:g} "
                 f"(--min-score)"]
    lines += [f"{name}: {path}" for name, path in result.get("outputs", {}).items()]
    _emit(args, result, lines)
    return 0


def index_command(args) -> int:
    from posescore.engine.jobs.index import index_job

    if args.ray is not None:
        return _index_on_ray(args)
    result = _with_client(args, lambda c: index_job(
        args.videos, args.archive, c, fps=args.fps,
        progress_factory=lambda video: _Progress(f"indexing {video.name}", args.quiet)))
    _emit(args, result, _index_lines(result))
    return 0


def _index_lines(result: dict) -> list[str]:
    lines = [f"{v['status']:16} {v['video']}" + (f"  ({v['poses']} poses in {v['frames']} frames)"
                                                  if "poses" in v else "") for v in result["videos"]]
    lines += [f"failed: {f['video']}: {f['error']}" for f in result.get("failed", [])]
    if "frames_per_second" in result:
        lines.append(f"{result['frames']} frames in {result['seconds']:.1f} s ({result['frames_per_second']:.1f}/s)")
    lines.append(f"archive: {result['archive']}")
    return lines


def _index_on_ray(args) -> int:
    """``index --ray``: the Ray Data pipeline (engine.jobs.index_ray); exit 1 when a video failed."""
    from posescore.engine.jobs.index_ray import ray_index_job

    bar = _Progress("indexing on Ray", args.quiet)

    def progress(state):
        bar(state["frames"])
        if bar.bar is not None:
            bar.bar.set_postfix_str(f"{state['videos_done']}/{state['videos']} videos")

    address, videos = (None if args.ray == "local" else args.ray), list(args.videos)
    if address is not None and Path(address).exists():  # `--ray VIDEO ...`: the option took a video
        address, videos = None, [address, *videos]
    result = ray_index_job(videos, args.archive, url=args.url, address=address,
                           workers=args.workers, decoders=args.decoders, fps=args.fps, progress=progress)
    bar.close()
    _emit(args, result, _index_lines(result))
    return 1 if result["failed"] else 0


def search_command(args) -> int:
    from posescore.engine.jobs.search import search_job

    query = args.pose or args.clip
    result = _run_job(args, lambda c: search_job(
        args.archive, c, pose=args.pose, clip=args.clip, k=args.k, fps=args.fps, min_gap=args.min_gap,
        video=args.video, start=args.start, end=args.end, min_score=args.min_score, explain=args.explain,
        out_dir=args.out, shard_urls=args.shard_url, allow_partial=args.allow_partial,
        timeout=args.timeout), query)
    lines = [f"{'#':>4} {'score':>5}  {'video':24} {'track':>5} {'start':>8} {'end':>8}  frames"]
    lines += [f"{n:4d} {m['score']:5.1f}  {m['video'][:24]:24} {m['track']:5d} {m['start_time']:7.2f}s "
              f"{m['end_time']:7.2f}s  {m['start_frame']}-{m['end_frame']}"
              for n, m in enumerate(result["matches"], 1)]
    if not result["matches"]:
        lines = [f"nothing similar: the best moment scores {result['best_score']:.1f}, under {args.min_score:g} "
                 f"(--min-score)" if "best_score" in result else
                 f"nothing similar: no movement scores {args.min_score:g} or more (--min-score)" if args.clip else
                 "nothing similar: the archive holds no pose that the filters let through"]
    if "explain" in result:
        report = result["explain"]["report"]
        lines.append(f"hit {result['explain']['hit']}: compare score {report['score']:.1f}, parts "
                     f"{format_parts(report['parts'])}")
    lines += [f"{name}: {path}" for name, path in result.get("outputs", {}).items()]
    lines += [f"missing shard {gone['shard']} at {gone['url']}: {gone['error']}"
              for gone in result.get("shards", {}).get("missing", [])]
    _emit(args, result, lines)
    return 0


def archive_command(args) -> int:
    """``posescore archive info | ls | rm | compact | verify | upgrade DIR``."""
    from posescore.engine import archive

    command = args.archive_command
    if command == "info":
        result = archive.archive_info(args.dir)
        lines = [f"{key:15} {value}" for key, value in result.items()]
    elif command == "ls":
        videos = archive.list_videos(args.dir)
        result = {"archive": args.dir, "videos": [{k: v[k] for k in archive.VIDEO_FIELDS + ("segment_file",)}
                                                 for v in videos]}
        lines = [f"{'id':16} {'poses':>9} {'duration':>9}  name"]
        lines += [f"{v['sha256'][:16]} {v['poses']:9d} {(v['duration'] or 0):8.1f}s  {v['name']}" for v in videos]
    elif command == "rm":
        removed = archive.remove_videos(args.dir, args.videos)
        result = {"archive": args.dir, "removed": [{"id": v["sha256"], "name": v["name"]} for v in removed]}
        lines = [f"removed {v['sha256'][:16]} {v['name']}" for v in removed]
    elif command == "compact":
        result = archive.compact(args.dir)
        lines = [f"segments {result['before']['segments']} -> {result['after']['segments']}, "
                 f"dead rows {result['before']['dead_rows']} -> {result['after']['dead_rows']}"]
    elif command == "verify":
        result = archive.verify(args.dir)
        lines = [f"{p['file']}: {p['problem']}" for p in result["problems"]]
        lines += [f"not in the catalog: {name}" for name in result["unnamed_files"]]
        lines.append(f"{result['segments']} segments: " + ("ok" if result["ok"] else
                                                          f"{len(result['problems'])} damaged"))
    else:
        result = archive.upgrade(args.dir)
        lines = ["already format 2" if result["already"] else
                 f"upgraded {result['upgraded']} of {result['videos']} videos to format {archive.VERSION}"]
    _emit(args, result, lines)
    return 0 if result.get("ok", True) else 1


def run(args) -> int:
    """Run the parsed command; a failure prints one line naming the problem and exits 1."""
    from posescore.clients import PoseScoreError

    from posescore.engine.archive import ArchiveError
    from posescore.engine.serving.export import ExportError
    from posescore.engine.serving.server import ServerError

    try:
        return args.func(args)
    except (ValueError, OSError, PoseScoreError, ArchiveError, ExportError, ServerError) as err:
        print(f"posescore: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("posescore: interrupted", file=sys.stderr)
        return 130
