"""``posescore loadtest``: load-test a posescore deployment with locust over gRPC.

Wire it into the ``posescore`` command line with :func:`add_parser` (``run(args)`` returns the exit
code); ``python -m posescore.loadtests.cli ...`` runs it alone (:func:`main`).

Exit codes: 0 every SLO met; 1 an SLO missed (printed); 2 bad usage, or the test could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from posescore.loadtests.options import (DEFAULT_MIX, DEFAULT_RAMP_P99_MS, LoadTestError, LoadTestOptions,
                                         parse_duration, parse_mix, parse_slo, parse_user_counts)

HELP = "load-test a deployment with locust over gRPC (headless; CSV and HTML reports)"


def _type(parse, what: str):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{what}: {err}") from None
    convert.__name__ = what
    return convert


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the loadtest options to ``parser``; their defaults are :class:`LoadTestOptions`'s."""
    default = LoadTestOptions()
    duration = _type(parse_duration, "duration")
    target = parser.add_argument_group("target")
    target.add_argument("--url", metavar="HOST:PORT", action="append", default=None,
                        help="gRPC address of a running server; repeat for several, over which the users' clients "
                             "balance (default: start the embedded one on loopback)")
    target.add_argument("--metrics-url", action="append", default=None,
                        help="its Prometheus metrics endpoint, one per --url (default: http://HOST:8002/metrics)")
    target.add_argument("--archive-root", default=None,
                        help="the server's archive root, where the search archive is written (needed for "
                             "search with --url)")
    target.add_argument("--model-repository", default=None, help="for the embedded server (default: ours)")
    target.add_argument("--no-dynamic-batching", action="store_true",
                        help="embedded server on a copy of the repository without pose's dynamic_batching block")

    load = parser.add_argument_group("load")
    load.add_argument("--users", type=int, default=default.users, help=f"concurrent users (default {default.users})")
    load.add_argument("--streams", type=int, default=default.streams,
                      help=f"live streams played at once when live is in --mix, beside the users: each a 30 fps "
                           f"recorded stream, every repetition checked against reps' offline answer "
                           f"(default {default.streams})")
    load.add_argument("--spawn-rate", type=float, default=default.spawn_rate,
                      help=f"users started per second (default {default.spawn_rate:g})")
    load.add_argument("--duration", type=duration, default=default.duration,
                      help=f"run time bound, e.g. 60s, 2m (default {default.duration:g}s)")
    load.add_argument("--max-requests", type=int, default=default.max_requests,
                      help=f"request count bound (default {default.max_requests}; 0: none)")
    load.add_argument("--mix", type=_type(parse_mix, "mix"), default=default.mix,
                      help=f"task weights (default {DEFAULT_MIX})")
    load.add_argument("--deadline", type=duration, default=default.deadline,
                      help=f"per-request deadline of the clients, retries included (default {default.deadline:g}s)")
    load.add_argument("--malformed", type=float, default=default.malformed,
                      help="share of requests replaced by malformed or oversized ones, expected to be refused "
                           "(default 0; e.g. 0.05)")
    load.add_argument("--restart-at", type=duration, default=default.restart_at,
                      help="restart the embedded server this long into the run, on the same ports")
    load.add_argument("--kill-stub-at", type=duration, default=default.kill_stub_at,
                      help="SIGKILL a model's python stub this long into the run (the embedded server is "
                           "supervised: the model is reloaded)")
    load.add_argument("--kill-stub", default=default.kill_stub,
                      help="the model whose stub --kill-stub-at kills (default: the first task of the mix)")

    data = parser.add_argument_group("requests")
    data.add_argument("--video", default=default.video, help="frames for pose, sampled evenly (default vtest.avi)")
    data.add_argument("--pose-frames", type=int, default=default.pose_frames,
                      help=f"distinct frames sampled (default {default.pose_frames})")
    data.add_argument("--pose-batch", type=int, default=default.pose_batch,
                      help=f"frames per pose request (default {default.pose_batch})")
    data.add_argument("--candidates", type=int, default=default.candidates,
                      help=f"candidates per score request (default {default.candidates})")
    data.add_argument("--dtw-length", type=int, default=default.dtw_length,
                      help=f"frames per DTW movement, about (default {default.dtw_length})")
    data.add_argument("--seed", type=int, default=default.seed)

    ramp = parser.add_argument_group("ramp (find the throughput knee per task)")
    ramp.add_argument("--ramp", action="store_true",
                      help="step the users up, task by task, and report the highest request rate whose p99 "
                           f"stays within the SLO's p99 for the task (--slo p99=...,pose.p99=...; default "
                           f"{DEFAULT_RAMP_P99_MS:g} ms)")
    ramp.add_argument("--ramp-users", type=_type(parse_user_counts, "ramp-users"), default=default.ramp_users,
                      help=f"user counts of the steps (default {','.join(map(str, default.ramp_users))})")
    ramp.add_argument("--all-steps", dest="ramp_all_steps", action="store_true",
                      help="keep stepping past the first step over the SLO (the whole curve)")
    ramp.add_argument("--step-duration", type=duration, default=default.step_duration,
                      help=f"measured time per step (default {default.step_duration:g}s)")
    ramp.add_argument("--warmup", type=duration, default=default.warmup,
                      help=f"unmeasured time before each step (default {default.warmup:g}s)")

    report = parser.add_argument_group("report")
    report.add_argument("--slo", type=_type(parse_slo, "slo"), default=default.slo,
                        help="e.g. p99=100ms,errors=0; TASK.p99=... for one task; errors=0.1%% for a share "
                             f"(default {default.slo})")
    report.add_argument("--out", default=default.out, help=f"folder for the reports (default {default.out})")
    report.add_argument("--quiet", action="store_true", help="print nothing but the summary")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``loadtest`` on the ``posescore`` subparsers (``set_defaults(func=run)``)."""
    return configure(subparsers.add_parser("loadtest", help=HELP, description=HELP))


def options_from(args: argparse.Namespace) -> LoadTestOptions:
    """The :class:`LoadTestOptions` of parsed ``args`` (each option's dest is its field's name)."""
    return LoadTestOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LoadTestOptions)})


def run(args: argparse.Namespace) -> int:
    """Run the load test of ``args``; the exit code."""
    from posescore.loadtests.report import format_ramp, format_report
    from posescore.loadtests.runner import run_loadtest

    options = options_from(args)
    try:
        code, report = run_loadtest(options)
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
