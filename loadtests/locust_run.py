"""The locust side of a load test, in its own process: ``python -m posescore.loadtests.locust_run CONFIG.json``.

Started by :mod:`loadtests.runner`, which owns the server, the workload and the report. This
process is gevent's from its first line (locust monkey-patches the standard library, grpc's gevent
support comes next), and runs locust headless in-process: ``locust.env.Environment`` and a local
runner, ``users`` users spawned at ``spawn_rate``, bounded by ``duration`` seconds and
``max_requests`` requests (the in-flight ones finish: nothing is cut off). It writes into ``out``:
locust's CSV files (``locust_stats.csv``, ``locust_failures.csv``, ``locust_exceptions.csv``,
``locust_stats_history.csv``) and HTML report (``report.html``), one row per request in
``requests.csv``, and ``locust_result.json`` for the runner. A line ``@@started <unix time>`` on
stdout marks the start of the load.

Ramp mode (``mode: "ramp"``) runs each task alone at each user count of ``ramp_users`` for
``step_duration`` seconds after ``warmup`` seconds, stopping a task at the first step whose p99
misses its ``slo_p99_ms[task]`` or that has failures (unless ``ramp_all_steps``); it writes ``ramp/<task>-<users>u_*.csv`` and the
steps into ``locust_result.json``.
"""

from gevent import monkey

monkey.patch_all()

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

from posescore.loadtests.report import Record, step_figures  # noqa: E402
from posescore.loadtests.users import Budget, LoadState, make_live_class, make_user_class  # noqa: E402
from posescore.loadtests.workload import Workload  # noqa: E402


def _environment(user_class, stop_timeout: float):
    from locust.env import Environment

    classes = user_class if isinstance(user_class, list) else [user_class]
    env = Environment(user_classes=classes, host=classes[0].host, stop_timeout=stop_timeout,
                      locustfile="loadtests/users.py")
    env.create_local_runner()
    return env


def _write_stats(env, base: str) -> None:
    """locust's stats, failures and exceptions CSV files of ``env`` (final values) at ``base``_*.csv."""
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    writer = StatsCSV(env, PERCENTILES_TO_REPORT)
    for suffix, write in (("stats", writer.requests_csv), ("failures", writer.failures_csv),
                          ("exceptions", writer.exceptions_csv)):
        with open(f"{base}_{suffix}.csv", "w", newline="") as out:
            write(csv.writer(out))


def _locust_entries(env) -> dict:
    stats = env.stats
    entries = {}
    for entry in [*stats.entries.values(), stats.total]:
        key = "Aggregated" if entry is stats.total else f"{entry.method} {entry.name}"
        entries[key] = {"type": entry.method or "", "name": entry.name, "requests": entry.num_requests,
                        "failures": entry.num_failures, "median_ms": entry.median_response_time,
                        "p99_ms": entry.get_response_time_percentile(0.99) if entry.num_requests else None,
                        "avg_bytes": entry.avg_content_length}
    return entries


def _write_records(path: Path, records: list) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(Record._fields)
        for row in records:
            writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])


def _hold_until(done_file: Path) -> float:
    """When a fault run may end: the time its fault's thread wrote (recovery and a hold after it),
    or never (inf) while the fault is not over."""
    try:
        return float(json.loads(done_file.read_text())["hold_until"])
    except FileNotFoundError:
        return float("inf")


def run_load(config: dict, workload: Workload) -> dict:
    from locust.html import get_html_report
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter, stats_history, update_stats_history

    out = Path(config["out"])
    state = LoadState(url=config["url"], workload=workload, deadline=config["deadline"],
                      malformed=config["malformed"], budget=Budget(config["max_requests"]), seed=config["seed"])
    classes, users = [], 0
    if set(config["mix"]) - {"live"}:
        classes.append(make_user_class(config["mix"], state))
        users += config["users"]
    if "live" in config["mix"]:
        classes.append(make_live_class(config["streams"], state))
        users += config["streams"]
    env = _environment(classes, config["deadline"] + 5.0)
    runner = env.runner
    base = str(out / "locust")
    csv_writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, base, full_history=True)
    background = [gevent.spawn(csv_writer.stats_writer), gevent.spawn(stats_history, runner)]

    runner.start(users, spawn_rate=max(config["spawn_rate"], config["streams"] if "live" in config["mix"] else 0))
    started = time.time()
    print(f"@@started {started:.6f}", flush=True)
    end = started + config["duration"]
    reason = "duration"
    done_file = Path(config["fault_done_file"]) if config.get("fault_done_file") else None
    while time.time() < end or (done_file is not None and time.time() < _hold_until(done_file)):
        if state.budget.exhausted and state.in_flight == 0:
            reason = "max-requests"
            break
        gevent.sleep(0.05)
    runner.quit()  # the users finish the request they are in (stop_timeout: the deadline + 5 s)
    stopped = time.time()

    for greenlet in background:
        greenlet.kill(block=True)
    update_stats_history(runner)
    csv_writer._stats_history_data_rows(csv_writer.stats_history_csv_writer, stopped)
    csv_writer.close_files()
    _write_stats(env, base)  # the final values (the periodic writer may be up to a second behind)
    (out / "report.html").write_text(get_html_report(env, show_download_link=False), encoding="utf-8")
    _write_records(out / "requests.csv", state.records)
    return {
        "mode": "load", "started": started, "stopped": stopped,
        "stop_reason": reason, "users": users, "issued": state.issued, "in_flight_at_end": state.in_flight,
        "errors_seen": state.errors_seen, "servers": state.servers, "locust": _locust_entries(env),
        "locust_exceptions": [{"count": e["count"], "msg": e["msg"]} for e in runner.exceptions.values()],
    }


def run_ramp(config: dict, workload: Workload) -> dict:
    out = Path(config["out"]) / "ramp"
    out.mkdir(parents=True, exist_ok=True)
    limits = config["slo_p99_ms"]
    tasks = {}
    started = time.time()
    print(f"@@started {started:.6f}", flush=True)
    all_records = []
    for task in config["mix"]:
        steps = []
        slo = limits[task]
        for users in config["ramp_users"]:
            state = LoadState(url=config["url"], workload=workload, deadline=config["deadline"],
                              malformed=config["malformed"], budget=Budget(config["max_requests"]),
                              seed=config["seed"] + users)
            env = _environment(make_user_class({task: 1}, state), config["deadline"] + 5.0)
            env.runner.start(users, spawn_rate=max(users, 1) * 10.0)
            gevent.sleep(config["warmup"])
            env.stats.reset_all()
            window_start = time.time()
            while time.time() < window_start + config["step_duration"] and not state.budget.exhausted:
                gevent.sleep(0.05)
            window_end = time.time()
            env.runner.quit()
            figures = step_figures(state.records, window_start, window_end)
            figures.update(users=users, within_slo=bool(figures["failures"] == 0 and figures["p99_ms"] is not None
                                                         and figures["p99_ms"] <= slo))
            steps.append(figures)
            _write_stats(env, str(out / f"{task}-{users}u"))
            all_records += state.records
            p99 = figures["p99_ms"]
            print(f"@@step {task} users={users} rps={figures['rps']:.1f} p50={figures['p50_ms'] or 0:.1f}ms "
                  f"p99={p99 or 0:.1f}ms failures={figures['failures']} "
                  f"{'ok' if figures['within_slo'] else 'over the SLO'}", flush=True)
            if not figures["within_slo"] and not config.get("ramp_all_steps"):
                break
        tasks[task] = steps
    _write_records(Path(config["out"]) / "requests.csv", all_records)
    return {"mode": "ramp", "started": started, "stopped": time.time(), "slo_p99_ms": limits, "tasks": tasks}


def main(argv: list[str] | None = None) -> int:
    from locust.log import setup_logging

    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(Path(argv[0]).read_text())
    setup_logging(config.get("log_level", "WARNING"), str(Path(config["out"]) / "locust.log"))
    workload = Workload.load(config["workload"])
    result = run_ramp(config, workload) if config["mode"] == "ramp" else run_load(config, workload)
    (Path(config["out"]) / "locust_result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is written and closed. Skip the interpreter's finalization: with gevent, grpc's
    # objects finalized at exit can deadlock on a grpc mutex (seen after the ramp's many channels).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
