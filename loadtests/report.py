"""The load test's report: figures per task and per ramp step, the fault report around a restart,
the SLO check, and the text ``posescore loadtest`` prints.

Pure functions of the request records and the child's result: no process, thread or server here,
so that the locust child imports this module, not the runner.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from posescore.loadtests.options import Slo
from posescore.loadtests.workload import FAILURES, OK


class Record(NamedTuple):
    """One request of a load test, as ``requests.csv`` holds it: the task and request name, the
    type (``grpc``, or ``grpc-expected-error`` for a malformed request), start and end (Unix
    seconds), ``ms`` (latency), the outcome (one of ``loadtests.workload``'s outcomes), the gRPC
    status and message of an error, and the payload bytes."""

    task: str
    name: str
    type: str
    start: float
    end: float
    ms: float
    outcome: str
    status: str
    message: str
    bytes: int


def read_records(path: str | Path) -> list[Record]:
    """The records of a ``requests.csv`` (none when it does not exist)."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as src:
        return [Record(row["task"], row["name"], row["type"], float(row["start"]), float(row["end"]),
                       float(row["ms"]), row["outcome"], row["status"], row["message"], int(row["bytes"] or 0))
                for row in csv.DictReader(src)]


def _percentiles(values: list[float]) -> dict[str, float | None]:
    array = np.asarray(values, np.float64)
    return {f"p{q}_ms": (float(np.percentile(array, q)) if len(array) else None) for q in (50, 95, 99)}


def step_figures(records: list[Record], start: float, end: float) -> dict:
    """Figures of one ramp step: the requests that completed in ``[start, end)``; requests/s
    counts the successful ones."""
    inside = [r for r in records if start <= r.end < end and r.type == "grpc"]
    seconds = end - start
    ok = sum(1 for r in inside if r.outcome == OK)
    failed = sum(1 for r in inside if r.outcome in FAILURES)
    return {"requests": len(inside), "ok": ok, "failures": failed, "seconds": seconds,
            "rps": ok / seconds if seconds > 0 else 0.0, **_percentiles([r.ms for r in inside])}


def task_summary(records: list[Record], tasks: list[str], seconds: float) -> dict[str, dict]:
    """Per task (and ``"all"``): requests, ok, failures by kind, requests/s, p50/p95/p99 (ms,
    exact, over every request of the task), plus ``"expected_errors"`` for malformed ones."""
    summary = {}
    normal = [r for r in records if r.type == "grpc"]
    for task in [*tasks, "all"]:
        mine = [r for r in normal if task == "all" or r.task == task]
        outcomes = Counter(r.outcome for r in mine)
        summary[task] = {"requests": len(mine), "ok": outcomes["ok"],
                         "failures": sum(outcomes[o] for o in FAILURES),
                         "errors": outcomes["error"], "wrong_answers": outcomes["wrong-answer"],
                         "interrupted": outcomes["interrupted"],
                         "rps": len(mine) / seconds if seconds > 0 else 0.0,
                         **_percentiles([r.ms for r in mine])}
    bad = [r for r in records if r.type == "grpc-expected-error"]
    if bad:
        outcomes = Counter(r.outcome for r in bad)
        summary["expected_errors"] = {
            "requests": len(bad), "refused_as_expected": outcomes["expected-error"],
            "failures": sum(outcomes[o] for o in FAILURES),
            "by_kind": dict(Counter(r.name for r in bad)), **_percentiles([r.ms for r in bad])}
    return summary


def fault_summary(records: list[Record], errors_seen: list, restart: dict, started: float) -> dict:
    """The error burst the clients saw around a restart (or a stub kill), and how long until they
    recovered."""
    report: dict[str, Any] = {"restart": {k: (round(v - started, 3) if isinstance(v, float) else v)
                                          for k, v in restart.items()}}
    if "stop_began" not in restart:
        return report
    stop = restart["stop_began"]
    ready = restart.get("ready", math.inf)
    # INVALID_ARGUMENT is the refusal a malformed request expects, not the fault's doing.
    burst = [e for e in errors_seen if e[0] >= stop - 1.0 and e[2] != "INVALID_ARGUMENT"]
    report["outage_s"] = (ready - stop) if "ready" in restart else None
    report["client_errors"] = len(burst)
    report["client_errors_by_status"] = dict(Counter(f"{e[2]}{'' if e[3] else ' (gave up)'}" for e in burst))
    last_error = max((e[0] for e in burst), default=stop)
    if burst:
        report["burst_first_s"] = burst[0][0] - started
        report["burst_last_s"] = last_error - started
    after = sorted(r.end for r in records if r.outcome == "ok" and r.end >= max(last_error, stop))
    report["first_success_after_burst_s"] = after[0] - started if after else None
    report["recovery_s"] = after[0] - stop if after else None
    spanning = [r for r in records if r.start < ready and r.end > stop and r.type == "grpc"]
    report["requests_spanning_outage"] = len(spanning)
    report["requests_spanning_outage_ok"] = sum(1 for r in spanning if r.outcome == "ok")
    report["longest_request_s"] = max((r.ms for r in spanning), default=0.0) / 1e3
    report["failures_during_burst"] = dict(Counter(
        r.outcome for r in records if r.outcome in FAILURES and r.end >= stop - 1.0))
    return report


def check_slo(summary: dict, slo: Slo, tasks: list[str], records: list[Record]) -> list[str]:
    """The SLOs missed, each as a sentence (empty: all met). Percentiles are exact, over every
    request of the task (malformed ones excluded)."""
    missed = []
    for task in tasks:
        latencies = [r.ms for r in records if r.type == "grpc" and r.task == task]
        for q in sorted({q for _, q in slo.latency}):
            limit = slo.limit(task, q)
            if limit is None or not latencies:
                continue
            value = float(np.percentile(latencies, q))
            if value > limit:
                missed.append(f"{task} p{q:g} {value:.1f} ms > {limit:g} ms")
    total = summary["all"]
    failures = total["failures"] + summary.get("expected_errors", {}).get("failures", 0)
    requests = total["requests"] + summary.get("expected_errors", {}).get("requests", 0)
    if slo.max_errors is not None and failures > slo.max_errors:
        missed.append(f"errors {failures} > {slo.max_errors}")
    if slo.max_error_share is not None and requests and failures / requests > slo.max_error_share:
        missed.append(f"errors {failures / requests * 100:.2f}% > {slo.max_error_share * 100:g}%")
    return missed


def _table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(report: dict) -> str:
    """The text ``posescore loadtest`` prints."""
    lines = []
    run = report["run"]
    where = run["url"] if isinstance(run["url"], str) else ", ".join(run["url"])
    who = ([f"{run['users']} users"] if run.get("users") else []) + \
        ([f"{run['streams']} live streams"] if run.get("streams") else [])
    lines.append(f"posescore loadtest: {where} ({run['server']}), {' and '.join(who) or '0 users'}, "
                 f"{run['seconds']:.1f} s ({run['stop_reason']}), mix {run['mix']}, malformed {run['malformed']:g}")
    summary = report["tasks"]
    rows = []
    for task in [*run["tasks"], "all"]:
        s = summary[task]
        rows.append([task, s["requests"], f"{s['rps']:.1f}", _ms(s["p50_ms"]), _ms(s["p95_ms"]), _ms(s["p99_ms"]),
                     s["failures"], s["wrong_answers"]])
    lines.append(_table(rows, ["task", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures",
                               "wrong answers"]))
    if "expected_errors" in summary:
        e = summary["expected_errors"]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(e["by_kind"].items()))
        lines.append(f"malformed/oversized: {e['requests']} sent, {e['refused_as_expected']} refused as expected "
                     f"(INVALID_ARGUMENT, or RESOURCE_EXHAUSTED over a model's max_request_bytes), "
                     f"{e['failures']} failures; p50 {_ms(e['p50_ms'])} ms, "
                     f"p99 {_ms(e['p99_ms'])} ms; {kinds}")
    accounting = report["accounting"]
    lines.append(f"accounting: {accounting['issued']} issued = {accounting['answered']} answered "
                 f"(+{accounting['unanswered']} unanswered); locust counted {accounting['locust_requests']}"
                 f"{'' if accounting['consistent'] else '  <-- MISMATCH'}")
    server = report.get("server")
    if server and server.get("models"):
        lines.append("server side (Triton metrics, difference over the run; ms per successful request):")
        rows = []
        for model, m in server["models"].items():
            rows.append([model, m["requests_ok"], m["requests_failed"], m["executions"],
                         "-" if m["avg_batch"] is None else f"{m['avg_batch']:.2f}", _ms(m["request_ms"]),
                         _ms(m["queue_ms"]), _ms(m["compute_infer_ms"]),
                         _ms((m["compute_input_ms"] or 0) + (m["compute_output_ms"] or 0)),
                         server["client_ok"].get(model, 0)])
        lines.append(_table(rows, ["model", "ok", "failed", "batches", "avg batch", "request", "queue",
                                   "compute", "in+out", "client ok"]))
        if server.get("note"):
            lines.append(server["note"])
    elif server and server.get("error"):
        lines.append(f"server side: {server['error']}")
    if len(report.get("servers") or []) > 1:
        lines.append("per server (the users' clients balance over them): " + "; ".join(
            f"{s['url']} answered {s['answered']}, not answering {s['unavailable']}" for s in report["servers"]))
    fault = report.get("fault")
    if fault:
        r = fault["restart"]
        if "error" in r:
            lines.append(f"{r.get('kind', 'restart')} FAILED: {r['error']}")
        if "stop_began" in r and "kind" in r:  # a stub killed, the model reloaded by the supervisor
            lines.append(f"{r['kind']}: at +{r['stop_began']:.1f} s, the model reloaded and answering again "
                         f"+{r.get('ready', float('nan')):.1f} s (outage {fault['outage_s'] or 0:.1f} s)")
        elif "stop_began" in r:
            lines.append(f"restart: stop at +{r['stop_began']:.1f} s, stopped +{r.get('stopped', float('nan')):.1f} s, "
                         f"ready again +{r.get('ready', float('nan')):.1f} s (outage {fault['outage_s'] or 0:.1f} s)")
        if "stop_began" in r:
            by_status = ", ".join(f"{k} {n}" for k, n in fault["client_errors_by_status"].items()) or "none"
            span = (f" between +{fault['burst_first_s']:.1f} s and +{fault['burst_last_s']:.1f} s"
                    if fault["client_errors"] else "")
            lines.append(f"error burst: {fault['client_errors']} errors seen by the clients{span} ({by_status})")
            rec = fault["recovery_s"]
            lines.append(f"recovery: {'-' if rec is None else f'{rec:.1f}'} s from the stop to the first success after "
                         f"the last error; {fault['requests_spanning_outage']} requests spanned the outage, "
                         f"{fault['requests_spanning_outage_ok']} of them answered right (longest "
                         f"{fault['longest_request_s']:.1f} s); failures: {fault['failures_during_burst'] or 'none'}")
    if report.get("cpu_warning"):
        lines.append(f"note: {report['cpu_warning']}")
    lines.append(f"reports: {report['out']}")
    slo = report["slo"]
    if slo["missed"]:
        lines.append(f"SLO {slo['spec']}: MISSED: " + "; ".join(slo["missed"]))
    else:
        lines.append(f"SLO {slo['spec']}: met")
    return "\n".join(lines)


def format_ramp(report: dict) -> str:
    limits = ", ".join(f"{task} {ms:g} ms" for task, ms in report["ramp"]["slo_p99_ms"].items())
    lines = [f"posescore loadtest --ramp: {report['run']['url']} ({report['run']['server']}), p99 SLO {limits}; "
             f"steps of {report['run']['step_duration']:g} s (after {report['run']['warmup']:g} s warm-up)"]
    rows = []
    for task, steps in report["ramp"]["tasks"].items():
        for step in steps:
            rows.append([task, step["users"], step["requests"], f"{step['rps']:.1f}", _ms(step["p50_ms"]),
                         _ms(step["p95_ms"]), _ms(step["p99_ms"]), step["failures"],
                         "yes" if step["within_slo"] else "no"])
    lines.append(_table(rows, ["task", "users", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures",
                               "within SLO"]))
    lines.append("knee (highest request rate with p99 within the SLO and no failures):")
    for task, knee in report["ramp"]["knees"].items():
        if knee is None:
            lines.append(f"  {task}: none (p99 over the SLO already at {report['ramp']['tasks'][task][0]['users']} user)")
        else:
            lines.append(f"  {task}: {knee['rps']:.1f} req/s at {knee['users']} users, p50 {_ms(knee['p50_ms'])} ms, "
                         f"p99 {_ms(knee['p99_ms'])} ms")
    if report.get("server", {}).get("models"):
        rows = [[m, v["requests_ok"], "-" if v["avg_batch"] is None else f"{v['avg_batch']:.2f}", _ms(v["queue_ms"]),
                 _ms(v["compute_infer_ms"])] for m, v in report["server"]["models"].items()]
        lines.append("server side over the whole ramp (ms per successful request):")
        lines.append(_table(rows, ["model", "ok", "avg batch", "queue", "compute"]))
    lines.append(f"reports: {report['out']}")
    return "\n".join(lines)


def ramp_missed(tasks: dict[str, list[dict]]) -> list[str]:
    """What a ramp missed, each as a sentence (empty: none): every step that had failures (errors,
    wrong answers, malformed requests answered), and every task whose p99 was over the SLO
    already at its first step (no knee)."""
    missed = []
    for task, steps in tasks.items():
        for step in steps:
            if step["failures"]:
                missed.append(f"{task} at {step['users']} users: {step['failures']} failures")
        if steps and not any(s["within_slo"] for s in steps) and not steps[0]["failures"]:
            missed.append(f"{task}: p99 over the SLO already at {steps[0]['users']} users")
    return missed
