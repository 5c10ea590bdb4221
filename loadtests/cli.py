"""``posescore loadtest``: load-test a posescore deployment with locust over gRPC.

Wire it into the ``posescore`` command line with :func:`add_parser` (``run(args)`` returns the exit
code); ``python -m loadtests.cli ...`` runs it alone (:func:`main`).

Exit codes: 0 every SLO met; 1 an SLO missed (printed); 2 bad usage, or the test could not run.
"""

from __future__ import annotations

import argparse
import sys

from .runner import (DEFAULT_MIX, DEFAULT_RAMP_P99_MS, DEFAULT_RAMP_USERS, LoadTestError, LoadTestOptions,
                     parse_duration, parse_mix, parse_slo)
from .workload import SAMPLE_VIDEO

HELP = "load-test a deployment with locust over gRPC (headless; CSV and HTML reports)"


def _type(parse, what: str):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{what}: {err}") from None
    convert.__name__ = what
    return convert


def _users_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected user counts like 1,2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"expected user counts >= 1, got {text!r}")
    return values


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the loadtest options to ``parser``."""
    duration = _type(parse_duration, "duration")
    target = parser.add_argument_group("target")
    target.add_argument("--url", metavar="HOST:PORT", default=None,
                        help="gRPC address of a running server (default: start the embedded one on loopback)")
    target.add_argument("--metrics-url", default=None,
                        help="its Prometheus metrics endpoint (default with --url: http://HOST:8002/metrics)")
    target.add_argument("--archive-root", default=None,
                        help="the server's archive root, where the search archive is written (needed for "
                             "search with --url)")
    target.add_argument("--model-repository", default=None, help="for the embedded server (default: ours)")
    target.add_argument("--no-dynamic-batching", action="store_true",
                        help="embedded server on a copy of the repository without pose's dynamic_batching block")

    load = parser.add_argument_group("load")
    load.add_argument("--users", type=int, default=4, help="concurrent users (default 4)")
    load.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second (default 10)")
    load.add_argument("--duration", type=duration, default=60.0, help="run time bound, e.g. 60s, 2m (default 60s)")
    load.add_argument("--max-requests", type=int, default=100_000,
                      help="request count bound (default 100000; 0: none)")
    load.add_argument("--mix", type=_type(parse_mix, "mix"), default=parse_mix(DEFAULT_MIX),
                      help=f"task weights (default {DEFAULT_MIX})")
    load.add_argument("--deadline", type=duration, default=30.0,
                      help="per-request deadline of the clients, retries included (default 30s)")
    load.add_argument("--malformed", type=float, default=0.0,
                      help="share of requests replaced by malformed or oversized ones, expected to be refused "
                           "(default 0; e.g. 0.05)")
    load.add_argument("--restart-at", type=duration, default=None,
                      help="restart the embedded server this long into the run, on the same ports")

    data = parser.add_argument_group("requests")
    data.add_argument("--video", default=SAMPLE_VIDEO, help="frames for pose, sampled evenly (default vtest.avi)")
    data.add_argument("--pose-frames", type=int, default=8, help="distinct frames sampled (default 8)")
    data.add_argument("--pose-batch", type=int, default=1, help="frames per pose request (default 1)")
    data.add_argument("--candidates", type=int, default=1000, help="candidates per score request (default 1000)")
    data.add_argument("--dtw-length", type=int, default=90, help="frames per DTW movement, about (default 90)")
    data.add_argument("--seed", type=int, default=0)

    ramp = parser.add_argument_group("ramp (find the throughput knee per task)")
    ramp.add_argument("--ramp", action="store_true",
                      help="step the users up, task by task, and report the highest request rate whose p99 "
                           f"stays within the SLO's p99 for the task (--slo p99=...,pose.p99=...; default "
                           f"{DEFAULT_RAMP_P99_MS:g} ms)")
    ramp.add_argument("--ramp-users", type=_type(_users_list, "ramp-users"), default=DEFAULT_RAMP_USERS,
                      help=f"user counts of the steps (default {','.join(map(str, DEFAULT_RAMP_USERS))})")
    ramp.add_argument("--all-steps", action="store_true",
                      help="keep stepping past the first step over the SLO (the whole curve)")
    ramp.add_argument("--step-duration", type=duration, default=10.0, help="measured time per step (default 10s)")
    ramp.add_argument("--warmup", type=duration, default=2.0, help="unmeasured time before each step (default 2s)")

    report = parser.add_argument_group("report")
    report.add_argument("--slo", type=_type(parse_slo, "slo"), default=parse_slo("errors=0"),
                        help="e.g. p99=100ms,errors=0; TASK.p99=... for one task; errors=0.1%% for a share "
                             "(default errors=0)")
    report.add_argument("--out", default="loadtest-report", help="folder for the reports (default loadtest-report)")
    report.add_argument("--quiet", action="store_true", help="print nothing but the summary")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``loadtest`` on the ``posescore`` subparsers (``set_defaults(func=run)``)."""
    return configure(subparsers.add_parser("loadtest", help=HELP, description=HELP))


def options_from(args: argparse.Namespace) -> LoadTestOptions:
    return LoadTestOptions(
        url=args.url, metrics_url=args.metrics_url, archive_root=args.archive_root, users=args.users,
        spawn_rate=args.spawn_rate, duration=args.duration, max_requests=args.max_requests, mix=args.mix,
        slo=args.slo, out=args.out, video=args.video, deadline=args.deadline, malformed=args.malformed,
        restart_at=args.restart_at, ramp=args.ramp, ramp_users=args.ramp_users, ramp_all_steps=args.all_steps,
        step_duration=args.step_duration,
        warmup=args.warmup, no_dynamic_batching=args.no_dynamic_batching, model_repository=args.model_repository,
        candidates=args.candidates, pose_batch=args.pose_batch, pose_frames=args.pose_frames,
        dtw_length=args.dtw_length, seed=args.seed, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    """Run the load test of ``args``; the exit code."""
    from .runner import format_ramp, format_report, run_loadtest

    options = options_from(args)
    try:
        code, report = run_loadtest(options, log=(lambda _: None) if options.quiet else None)
    except LoadTestError as err:
        print(f"posescore loadtest: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("posescore loadtest: interrupted", file=sys.stderr)
        return 130
    if options.quiet:
        print(format_ramp(report) if options.ramp else format_report(report))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="posescore loadtest", description=HELP))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
