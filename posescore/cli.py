"""``posescore``: the one command line, composed of the engine's commands (``engine.cli``) and the
load test (``loadtests.cli``), so that neither package imports the other's command line."""

from __future__ import annotations

import argparse
import sys

from posescore.engine.cli import commands, parser as engine_parser
from posescore.loadtests import cli as loadtest_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posescore", description="Score human movement.")
    sub = parser.add_subparsers(dest="command", required=True)
    engine_parser.add_commands(sub)
    loadtest_cli.add_parser(sub)  # imports locust only when a load test runs
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = engine_parser.check_args(args)
    if problem:
        parser.error(problem)  # exit code 2
    return commands.run(args)  # one line naming the problem on failure, exit code 1


if __name__ == "__main__":
    sys.exit(main())
