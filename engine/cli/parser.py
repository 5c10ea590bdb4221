"""The options of the engine's commands (``posescore.cli`` registers them): one parser per command,
and the usage checks the commands share."""

from __future__ import annotations

from posescore.engine.cli import commands


def add_commands(sub) -> None:
    """Register the engine's commands (info, models, serve, probe, pose, compare, reps, find, index,
    search, archive) on the ``posescore`` subparsers; each sets ``func``, run by
    ``engine.cli.commands.run``."""
    add_server_commands(sub)
    add_job_commands(sub)
    add_archive_commands(sub)


def add_server_commands(sub) -> None:
    """``info``, ``models export``, ``serve`` and ``probe``."""
    info = sub.add_parser("info", help="versions and available compute backends")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=commands.info_command)

    from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY

    models = sub.add_parser("models", help="manage the model repository")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    export = models_sub.add_parser("export", help="export the pose model to ONNX (skipped when current)")
    export.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    export.add_argument("--force", action="store_true", help="export even when the file is current")
    export.set_defaults(func=commands.models_export_command)

    serve = sub.add_parser("serve", help="run the embedded Triton server in the foreground")
    serve.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    serve.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    serve.add_argument("--http", action="store_true",
                       help="also serve Triton's HTTP/REST endpoint (off: gRPC is the product's protocol)")
    serve.add_argument("--http-port", type=int, default=None, help="with --http; default: a free port")
    serve.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    serve.add_argument("--archive-root", default=None,
                       help="folder under which the search model may load archives (default: .)")
    serve.add_argument("--archive-shard", default=None, metavar="I/N",
                       help="search only shard I of N of each archive (its segments whose id is I modulo N), "
                            "for `posescore search --shard-url` over several servers")
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.set_defaults(func=commands.serve_command)

    front = sub.add_parser("front", help="the gRPC front alone, before a tritonserver started by other means "
                                         "(a Kubernetes pod): each model's requests within its max_request_bytes")
    front.add_argument("--listen", required=True, metavar="HOST:PORT", help="where clients connect")
    front.add_argument("--backend", required=True, metavar="HOST:PORT",
                       help="tritonserver's gRPC endpoint (a loopback port)")
    front.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY),
                       help="where each model's config.pbtxt states its max_request_bytes")
    front.add_argument("--key-env", default="POSESCORE_FRONT_KEY",
                       help="environment variable holding the key of tritonserver's "
                            "--grpc-restricted-protocol=...:posescore-front=KEY (default: %(default)s)")
    front.set_defaults(func=commands.front_command)

    probe = sub.add_parser("probe", help="send each model a tiny real request (a liveness check); exit 1 if one fails")
    probe.add_argument("--url", required=True, help="HOST:PORT of the server's gRPC endpoint")
    probe.add_argument("--model", action="append", default=None,
                       help="a model to probe (repeat; default: every model of model_repository/)")
    probe.add_argument("--timeout", type=float, default=20.0, help="seconds per model")
    probe.set_defaults(func=commands.probe_command)


def _job_parser(sub, name: str, help_text: str):
    """A job's parser with the options every job shares."""
    job = sub.add_parser(name, help=help_text)
    job.add_argument("--json", action="store_true", help="print one JSON object")
    job.add_argument("--quiet", action="store_true", help="no progress output")
    job.add_argument("--fps", type=float, default=None, help="sample videos at this frame rate")
    job.add_argument("--url", default=None, help="HOST:PORT of a running server "
                     "(default: start an embedded one for the job)")
    job.add_argument("--timeout", type=float, default=120.0, help="seconds per server call")
    return job


PERSON_HELP = ("whom to follow in {what}: a track id (the `idx` that `posescore pose` writes), a point X,Y@T "
               "or a box X0,Y0,X1,Y1@T (pixels, in the frame nearest T seconds: the person whose box contains "
               "the point / overlaps the box most), or auto (default: {auto})")
THREE_D_HELP = ("score in world coordinates (the landmarks model), each performance turned once to face one way: "
                "holds better when the cameras stood apart; 2-D stays the default (docs/BENCHMARKS.md, Views)")
ATTEMPT_AUTO = "the person whose movement best fits the reference's performer"
REFERENCE_AUTO = "the person who moves the most; an error lists the tracks when two move alike"


def _repetition_options(parser) -> None:
    """The options ``reps`` and ``live`` share: the reference's span, the flag threshold, the
    mirror, and what counts as a repetition."""
    from posescore.engine.analysis.reps import REP_MAX_RATIO, REP_MIN_RATIO, REP_MIN_SCORE
    from posescore.kernels import SCORE_THRESHOLD

    parser.add_argument("--from", dest="start", type=float, default=None,
                        help="seconds: the repetition starts here in REFERENCE")
    parser.add_argument("--to", dest="end", type=float, default=None, help="seconds: and ends here")
    parser.add_argument("--threshold", type=float, default=SCORE_THRESHOLD,
                        help="repetitions and parts under it are flagged")
    parser.add_argument("--mirror", action="store_true", help="also match the mirror image")
    parser.add_argument("--min-score", type=float, default=REP_MIN_SCORE,
                        help="segments scoring under this are not repetitions (rests, other movements)")
    parser.add_argument("--min-ratio", type=float, default=REP_MIN_RATIO,
                        help="a repetition lasts at least this times the reference")
    parser.add_argument("--max-ratio", type=float, default=REP_MAX_RATIO, help="and at most this times")


def _person_options(job, reference: bool = True) -> None:
    """``--person`` (the attempt's) and, with ``reference``, ``--reference-person``."""
    job.add_argument("--person", default="auto", metavar="SPEC", help=PERSON_HELP.format(what="ATTEMPT",
                                                                                          auto=ATTEMPT_AUTO))
    if reference:
        job.add_argument("--reference-person", default="auto", metavar="SPEC",
                         help=PERSON_HELP.format(what="REFERENCE", auto=REFERENCE_AUTO))


def add_job_commands(sub) -> None:
    """``pose``, ``compare``, ``reps``, ``find``, ``index`` and ``search``."""
    from posescore.kernels import SCORE_THRESHOLD

    pose = _job_parser(sub, "pose", "keypoints of an image or video as AlphaPose / COCO results JSON")
    pose.add_argument("input", help="image, video or pose JSON")
    pose.add_argument("-o", "--output", help="write the JSON here (default: stdout)")
    pose.add_argument("--landmarks", action="store_true",
                      help="also BlazePose GHUM's 33 landmarks (heels, foot tips) and world coordinates in metres")
    pose.add_argument("--trc", metavar="FILE",
                      help="write the performer's world landmarks as OpenSim markers (.trc); implies --landmarks")
    pose.add_argument("--markers", choices=("pose2sim", "opencap"), default="pose2sim",
                      help="marker names of --trc (default: %(default)s)")
    pose.set_defaults(func=commands.pose_command)

    gait = _job_parser(sub, "gait", "a runner's or walker's gait from a side view: contacts, cadence, contact "
                                     "times, knee flexion, overstride, foot strike, asymmetry")
    gait.add_argument("input", help="video (side view, whole body) or pose JSON from `posescore pose --landmarks`")
    gait.add_argument("--height", type=float, default=None, metavar="M",
                      help="the runner's height in metres (lengths in metres; default: the world landmarks' scale)")
    gait.add_argument("--treadmill-speed", type=float, default=None, metavar="KMH",
                      help="the treadmill's speed in km/h (stride length; refused for an overground run)")
    gait.add_argument("--out", help="folder for gait.json, gait.png, gait.mp4, report.html, angles.mot, poses.json")
    gait.add_argument("--csv", help="write one row per step to this CSV file")
    gait.add_argument("--person", default="auto", metavar="SPEC",
                      help=PERSON_HELP.format(what="the video", auto="the person who moves the most"))
    gait.set_defaults(func=commands.gait_command)

    compare = _job_parser(sub, "compare", "score an attempt against a reference movement (DTW-aligned)")
    compare.add_argument("reference", help="video or pose JSON")
    compare.add_argument("attempt", help="video or pose JSON")
    compare.add_argument("--out", help="folder for report.json, side_by_side.mp4 and scores.png")
    compare.add_argument("--threshold", type=float, default=SCORE_THRESHOLD, help="parts under it are drawn red")
    compare.add_argument("--mirror", action="store_true", help="also match the mirror image")
    compare.add_argument("--window", type=int, default=None, help="DTW window in frames")
    compare.add_argument("--csv", help="write per-step scores and joint angles to this CSV file")
    compare.add_argument("--3d", dest="three_d", action="store_true", help=THREE_D_HELP)
    _person_options(compare)
    compare.set_defaults(func=commands.compare_command)

    reps = _job_parser(sub, "reps", "find and score every repetition of a reference movement in an attempt")
    reps.add_argument("reference", help="video or pose JSON of one repetition")
    reps.add_argument("attempt", help="video or pose JSON of any number of repetitions")
    _repetition_options(reps)
    reps.add_argument("--out", help="folder for reps.json, reps.mp4, reps.png and report.html")
    reps.add_argument("--csv", help="write per-step scores and joint angles of every repetition to this CSV file")
    reps.add_argument("--3d", dest="three_d", action="store_true", help=THREE_D_HELP)
    _person_options(reps)
    reps.set_defaults(func=commands.reps_command)

    live = _job_parser(sub, "live", "score every repetition of a reference movement as it happens")
    live.add_argument("reference", help="video or pose JSON of one repetition")
    live.add_argument("--source", required=True, metavar="SRC",
                      help="a video file (played frame by frame through the pose model); a camera /dev/videoN "
                           "or a network stream rtsp://, srt://, udp://, http(s):// (read as it comes, the newest "
                           "frame each time the pose model is free, opened again when it drops); or - for JSON "
                           "lines of keypoints on stdin (the records posescore pose writes, with time)")
    live.add_argument("--reconnect", type=float, default=10.0, metavar="S",
                      help="a camera or stream that drops is opened again for this long before live ends "
                           "with the repetitions so far (default 10 s)")
    live.add_argument("--realtime", action="store_true",
                      help="play a video file at its own pace (a camera's stand-in): late frames are dropped")
    _repetition_options(live)
    live.add_argument("--reference-person", default="auto", metavar="SPEC",
                      help="whom to follow in REFERENCE: a track id, X,Y@T, X0,Y0,X1,Y1@T, or auto")
    live.add_argument("--person", default="auto", metavar="SPEC",
                      help="whom to follow in SRC: X,Y@T (the person whose box holds the point at T s) or "
                           "X0,Y0,X1,Y1@T (whose box overlaps it most), then followed by overlap; auto: the "
                           "largest person of the first frame with anyone")
    live.add_argument("--page", action="store_true",
                      help="serve a page on 127.0.0.1 (its URL printed to stderr at start) that shows the "
                           "source with the skeleton (red where a part is under --threshold), the reference "
                           "beside it at the athlete's phase, the running score, the count, the last feedback "
                           "and the repetitions; self-contained, updated as events happen; it stops with the "
                           "stream unless --page-hold")
    live.add_argument("--page-port", type=int, default=None, metavar="N",
                      help="with --page: serve on this port (default: a free one)")
    live.add_argument("--page-hold", action="store_true",
                      help="with --page: keep serving the page after the stream ends, until Ctrl-C")
    live.set_defaults(func=commands.live_command)

    from posescore.engine.jobs.find import MAX_MOMENTS, MIN_MOMENT_SCORE

    find = _job_parser(sub, "find", "the moments of a video most similar to a pose")
    find.add_argument("pose", help="image (its main person) or pose JSON")
    find.add_argument("video", help="video or pose JSON")
    find.add_argument("--k", type=int, default=5)
    find.add_argument("--mirror", action="store_true", help="also match the mirror image")
    find.add_argument("--out", help="folder for best_match.png")
    find.add_argument("--3d", dest="three_d", action="store_true", help=THREE_D_HELP)
    find.add_argument("--min-score", type=float, default=MIN_MOMENT_SCORE,
                      help="moments scoring under this are not the pose (none left: nothing similar)")
    find.add_argument("--person", default="auto", metavar="SPEC",
                      help=PERSON_HELP.format(what="POSE (the query image)", auto="its main person: largest, "
                                              "most confident") + "; every person of VIDEO is searched")
    find.set_defaults(func=commands.find_command, max_k=MAX_MOMENTS)

    index = _job_parser(sub, "index", "extract every pose of videos into an archive")
    index.add_argument("videos", nargs="+")
    index.add_argument("--archive", required=True, help="archive folder (created if missing)")
    index.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="index on a Ray Data pipeline: decoding in CPU tasks, the pose model in --workers "
                            "actors (each a client of --url, else the model in-process); ADDRESS: a Ray "
                            "cluster's (default: a local Ray started for the job)")
    index.add_argument("--workers", type=int, default=1, help="with --ray: pose model actors (default 1)")
    index.add_argument("--decoders", type=int, default=None,
                       help="with --ray: videos decoded at once (default: as many as Ray's CPUs allow)")
    index.set_defaults(func=commands.index_command)

    from posescore.engine.archive import CLIP_MIN_SCORE, MAX_K as SEARCH_MAX_K, MOMENT_GAP_S

    search = _job_parser(sub, "search", "the moments most like a pose (--pose) or the movements most like a clip "
                                  "(--clip) in an archive")
    search.add_argument("--archive", required=True)
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--pose", help="image or pose JSON")
    query.add_argument("--clip", help="video or pose JSON of a movement")
    search.add_argument("--k", type=int, default=10, help=f"hits to answer (at most {SEARCH_MAX_K:,})")
    search.add_argument("--min-gap", type=float, default=MOMENT_GAP_S,
                        help="seconds: hits of one video and person closer than this are one moment")
    search.add_argument("--video", default=None, help="only videos whose name or path matches this glob")
    search.add_argument("--from", dest="start", type=float, default=None, help="seconds: only from this time on")
    search.add_argument("--to", dest="end", type=float, default=None, help="seconds: only up to this time")
    search.add_argument("--min-score", type=float, default=CLIP_MIN_SCORE,
                        help="hits scoring under this are not answered (a pose's: the score service's scale; "
                             "a clip's: compare's)")
    search.add_argument("--explain", type=int, default=None,
                        help="with --clip: compare's full report of hit N (1 = the best)")
    search.add_argument("--out", help="with --explain: folder for its report.json")
    search.add_argument("--shard-url", action="append", default=None, metavar="HOST:PORT",
                        help="search on these servers, the i-th answering shard i/N of the archive (a folder "
                             "under their archive root), and merge their hits exactly; repeat per shard")
    search.add_argument("--allow-partial", action="store_true",
                        help="with --shard-url: answer from the shards that answer (each within --timeout), "
                             "naming those that do not")
    search.set_defaults(func=commands.search_command, max_k=SEARCH_MAX_K)


def add_archive_commands(sub) -> None:
    """``archive info|ls|rm|compact|verify|upgrade``."""
    archive = sub.add_parser("archive", help="inspect and maintain an archive")
    archive_sub = archive.add_subparsers(dest="archive_command", required=True)
    for name, text in (("info", "counts and sizes"), ("ls", "the videos"), ("rm", "remove videos"),
                       ("compact", "merge small segments, drop removed videos' rows, tile row-layout vectors"),
                       ("verify", "check every segment against the catalog's checksums"),
                       ("upgrade", "migrate a format-1 archive to format 2")):
        command = archive_sub.add_parser(name, help=text)
        command.add_argument("dir", help="archive folder")
        command.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "rm":
            command.add_argument("videos", nargs="+", help="names or content ids (a prefix of 8+ characters)")
        command.set_defaults(func=commands.archive_command)


def check_args(args) -> str | None:
    """The usage error of the options every command shares, if any (the CLI exits 2 with it):
    ``--k`` in 1..``args.max_k`` (each command's own bound), ``--threshold`` a score in 0..100,
    ``--window`` >= 1 frame, ``--fps`` a finite rate > 0, ``--person`` / ``--reference-person`` a
    person spec (``engine.analysis.people.parse_person``)."""
    import math

    k, threshold = getattr(args, "k", None), getattr(args, "threshold", None)
    window, fps = getattr(args, "window", None), getattr(args, "fps", None)
    max_k = getattr(args, "max_k", None)
    if k is not None and max_k is not None and not 1 <= k <= max_k:
        return f"--k: expected an integer from 1 to {max_k:,}, got {k}"
    min_gap = getattr(args, "min_gap", None)
    if min_gap is not None and not (math.isfinite(min_gap) and min_gap >= 0):
        return f"--min-gap: expected seconds >= 0, got {min_gap:g}"
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    for name, value in (("--from", start), ("--to", end)):
        if value is not None and not math.isfinite(value):
            return f"{name}: expected seconds, got {value:g}"
    if start is not None and end is not None and start > end:
        return f"--from {start:g} is after --to {end:g}"
    min_score = getattr(args, "min_score", None)
    if min_score is not None and not 0 <= min_score <= 100:
        return f"--min-score: expected a score from 0 to 100, got {min_score:g}"
    explain = getattr(args, "explain", None)
    if explain is not None and explain < 1:
        return f"--explain: expected a hit number >= 1, got {explain}"
    lo, hi = getattr(args, "min_ratio", None), getattr(args, "max_ratio", None)
    if lo is not None and not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        return f"--min-ratio {lo:g} / --max-ratio {hi:g}: expected 0 < min <= max"
    if threshold is not None and not 0 <= threshold <= 100:  # also false for NaN
        return f"--threshold: expected a score from 0 to 100, got {threshold:g}"
    if window is not None and window < 1:
        return f"--window: expected a number of frames >= 1, got {window}"
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        return f"--fps: expected frames per second > 0, got {fps:g}"
    from posescore.engine.analysis.people import PersonError, parse_person

    for option in ("person", "reference_person"):
        value = getattr(args, option, None)
        if value is not None:
            try:
                parse_person(value, "--" + option.replace("_", "-"))
            except PersonError as err:
                return str(err)
    return None
