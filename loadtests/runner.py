"""The headless load-test runner: server, workload, locust process, metrics, report, SLO.

:func:`run_loadtest` is what ``posescore loadtest`` does:

1. use the server at ``url``, or start the embedded one (``engine.serving.server.TritonServer``) on
   loopback with the models of the mix (``no_dynamic_batching``: on a copy of the repository whose
   pose config has its ``dynamic_batching`` block removed);
2. build the workload and its known answers (:mod:`loadtests.workload`), writing the search
   archive under the server's archive root;
3. read the server's Prometheus metrics, run locust in a child process
   (:mod:`loadtests.locust_run`, gevent's from its first line; this process stays free of gevent,
   so the server and the metrics are handled normally), restart the server mid-run when asked,
   read the metrics again;
4. print and write (``summary.json``) the per-task figures, Triton's per-model queue and compute
   times, the fault report, and which SLOs were missed; the exit code is 1 when one was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable


from posescore.loadtests import metrics as prom
from posescore.loadtests.options import DEFAULT_RAMP_P99_MS, LoadTestError, LoadTestOptions, checked_mix, format_mix
from posescore.loadtests.report import (Record, check_slo, fault_summary, format_ramp, format_report, ramp_missed,
                                        read_records, task_summary)
from posescore.loadtests.workload import WorkloadError, build_workload, check_sizes, remove_archive


# -- the embedded server's repository --------------------------------------------------------------
def strip_dynamic_batching(source: str | Path, target: str | Path, models: tuple[str, ...] = ("pose",)) -> Path:
    """A copy of the model repository ``source`` at ``target`` whose ``models`` configs have no
    ``dynamic_batching { ... }`` block (large files are linked, not copied)."""
    source, target = Path(source), Path(target)

    def copy(src, dst):
        if os.path.getsize(src) > 1 << 20:
            os.symlink(os.path.abspath(src), dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy, ignore=shutil.ignore_patterns("__pycache__"))
    for model in models:
        config = target / model / "config.pbtxt"
        text = config.read_text()
        stripped = _remove_block(text, "dynamic_batching")
        if stripped == text:
            raise LoadTestError(f"{config}: no dynamic_batching block to remove")
        config.write_text(stripped)
    return target


def _remove_block(text: str, name: str) -> str:
    """``text`` without the ``name { ... }`` block (braces balanced)."""
    match = re.search(rf"^\s*{name}\s*\{{", text, re.MULTILINE)
    if not match:
        return text
    depth, i = 0, match.end() - 1
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    return text[:match.start()] + text[i + 1:]


# -- the run ----------------------------------------------------------------------------------------
#: After a fault, the load goes on at least this long once the server answers again, whatever the
#: run's duration: recovery is measured on a slow or busy machine too.
RECOVERY_HOLD_S = 3.0


class _Fault(threading.Thread):
    """A fault done to the embedded server ``at`` seconds after the load started (``load_started``,
    set by the runner); ``record`` says when, or the error that stopped it. When it is over
    (recovered, failed or cancelled), the time the load may end is written to ``done_file``: the
    locust process keeps the load on until then (``RECOVERY_HOLD_S`` after recovery)."""

    def __init__(self, name: str, server, at: float, started: threading.Event, done_file: Path):
        super().__init__(name=name, daemon=True)
        self.server, self.at, self.started, self.done_file = server, at, started, done_file
        self.load_started: float | None = None
        self.record: dict[str, Any] = {}
        self.cancel = threading.Event()

    def run(self) -> None:
        try:
            self.started.wait()
            if self.load_started is None or self.cancel.wait(max(0.0, self.load_started + self.at - time.time())):
                return  # the load never started, or is over
            try:
                self.fault()
            except Exception as err:  # noqa: BLE001 - reported with the results
                self.record["error"] = f"{type(err).__name__}: {err}"
        finally:
            ready = self.record.get("ready")
            until = ready + RECOVERY_HOLD_S if ready is not None else time.time()
            partial = self.done_file.with_suffix(".partial")
            partial.write_text(json.dumps({"hold_until": until}))
            partial.replace(self.done_file)

    def fault(self) -> None:
        raise NotImplementedError


class _Restarter(_Fault):
    """Restarts the embedded server on the same ports, reading the metrics just before (the
    counters restart from zero)."""

    def __init__(self, server, at: float, started: threading.Event, read_metrics: Callable[[], Any],
                 done_file: Path):
        super().__init__("posescore-loadtest-restart", server, at, started, done_file)
        self.read_metrics = read_metrics
        self.metrics_before_stop = None

    def fault(self) -> None:
        self.metrics_before_stop = self.read_metrics()
        stopping = threading.Event()
        poller = threading.Thread(target=self._poll_metrics, args=(stopping,), daemon=True)
        poller.start()
        self.record["stop_began"] = time.time()
        try:
            self.server.stop()
        finally:
            stopping.set()
            poller.join()
        self.record["stopped"] = time.time()
        self.server.start()
        self.record["ready"] = time.time()

    def _poll_metrics(self, stopping: threading.Event) -> None:
        """Keep the last metrics the stopping server answers (it finishes its in-flight requests
        before it goes): the counters of its first life, nearly to the end."""
        while not stopping.is_set():
            try:
                sample = self.read_metrics()
            except Exception:  # noqa: BLE001 - the endpoint is gone
                return
            # Counters only grow within one life; a model unloading drops out of the sample.
            self.metrics_before_stop = prom.merge_max(self.metrics_before_stop, sample)
            stopping.wait(0.02)


class _StubKiller(_Fault):
    """SIGKILLs ``model``'s python stub (as the kernel's OOM killer would), on a server a
    :class:`engine.serving.supervisor.Supervisor` keeps; the record says when (``stop_began``,
    ``stopped``: the kill) and when the supervisor had the model answering again (``ready``: its
    "reloaded" event, among ``events``). A reloaded model keeps its Triton counters."""

    def __init__(self, server, model: str, at: float, started: threading.Event, events: list, done_file: Path):
        super().__init__("posescore-loadtest-kill-stub", server, at, started, done_file)
        self.model, self.events = model, events
        self.record["kind"] = f"kill of model {model}'s python stub"

    def fault(self) -> None:
        import os
        import signal

        pids = self.server.stub_pids(self.model)
        if not pids:
            raise RuntimeError(f"no python stub of model {self.model} found")
        self.record["stop_began"] = time.time()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.record["stopped"] = time.time()
        while not self.cancel.wait(0.05):
            done = [e for e in self.events if e["what"] == "reloaded" and e.get("model") == self.model
                    and e["time"] >= self.record["stop_began"]]
            if done:
                self.record["ready"] = done[0]["time"]
                return


def run_loadtest(options: LoadTestOptions, log: Callable[[str], Any] | None = None) -> tuple[int, dict]:
    """Run the load test; returns ``(exit code, report)``: 0 all SLOs met, 1 one missed (the report
    says which). Raises LoadTestError when the test cannot run."""
    from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, ServerError, TritonServer

    options = _validated(options)
    log = log or ((lambda _: None) if options.quiet else (lambda m: print(m, flush=True)))
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(options.mix)
    scratch = Path(tempfile.mkdtemp(prefix="posescore-loadtest-"))
    server = None
    work = None
    try:
        # 1. the server
        if options.url:
            url = options.url if len(options.url) > 1 else options.url[0]
            metrics_urls = options.metrics_url or [f"http://{u.rsplit(':', 1)[0]}:8002/metrics" for u in options.url]
            archive_root = options.archive_root
            if "search" in tasks and archive_root is None:
                raise LoadTestError("search with --url needs --archive-root (the server's archive root, "
                                    "where the test writes its archive); or leave search out of --mix")
            server_kind = "given"
        else:
            repository = Path(options.model_repository or DEFAULT_MODEL_REPOSITORY)
            if options.no_dynamic_batching:
                repository = strip_dynamic_batching(repository, scratch / "model_repository")
            archive_root = options.archive_root or str(scratch / "archives")
            Path(archive_root).mkdir(parents=True, exist_ok=True)
            models = tasks + (["pose"] if "live" in tasks and "pose" not in tasks else [])  # live's poses
            server = TritonServer(repository, models=models, archive_root=archive_root)
            log(f"starting the embedded Triton server ({', '.join(models)}"
                f"{'; pose without dynamic batching' if options.no_dynamic_batching else ''}) ...")
            begin = time.time()
            try:
                server.start()
            except ServerError as err:
                raise LoadTestError(str(err)) from None
            url, metrics_urls = server.grpc_url, [server.metrics_url]
            server_kind = "embedded" + (", no dynamic batching" if options.no_dynamic_batching else "")
            log(f"server ready in {time.time() - begin:.1f} s: gRPC {url}, metrics {server.metrics_url}")

        # 2. the workload and its known answers
        begin = time.time()
        try:
            work = build_workload(url, tasks=tasks, video=options.video, pose_frames=options.pose_frames,
                                  pose_batch=options.pose_batch, candidates=options.candidates,
                                  dtw_length=options.dtw_length, archive_root=archive_root, seed=options.seed,
                                  timeout=max(options.deadline, 60.0), log=log)
        except Exception as err:  # noqa: BLE001 - PoseScoreError, WorkloadError, ArchiveError
            raise LoadTestError(f"cannot build the workload: {err}") from None
        workload_path = scratch / "workload.pkl"
        work.save(workload_path)
        log(f"workload and known answers ready in {time.time() - begin:.1f} s")

        # 3. metrics, locust, restart, metrics
        def read_metrics():  # several servers: their counters summed per model
            return prom.merge_sum([prom.scrape(m) for m in metrics_urls])

        server_view: dict[str, Any] = {}
        try:
            before = read_metrics()
        except prom.MetricsError as err:
            before, server_view["error"] = None, str(err)
        config = {
            "mode": "ramp" if options.ramp else "load", "url": url, "out": str(out), "workload": str(workload_path),
            "mix": options.mix, "users": options.users, "streams": options.streams,
            "spawn_rate": options.spawn_rate, "duration": options.duration, "max_requests": options.max_requests, "deadline": options.deadline,
            "malformed": options.malformed, "seed": options.seed, "ramp_users": list(options.ramp_users),
            "step_duration": options.step_duration, "warmup": options.warmup,
            "ramp_all_steps": options.ramp_all_steps,
            # a fault run holds the load until the fault's thread says (see _Fault)
            "fault_done_file": str(scratch / "fault.done")
            if options.restart_at is not None or options.kill_stub_at is not None else None,
            "slo_p99_ms": {task: options.slo.limit(task, 99) or DEFAULT_RAMP_P99_MS for task in tasks},
        }
        config_path = scratch / "config.json"
        config_path.write_text(json.dumps(config))
        for stale in ("locust_result.json", "requests.csv"):
            (out / stale).unlink(missing_ok=True)

        started = threading.Event()
        restarter = supervisor = None
        if options.restart_at is not None:
            restarter = _Restarter(server, options.restart_at, started, read_metrics, Path(config["fault_done_file"]))
            restarter.start()
        elif options.kill_stub_at is not None:
            from posescore.engine.serving.supervisor import Supervisor

            events: list = []
            supervisor = Supervisor(server, interval=0.5, notify=events.append).start()
            restarter = _StubKiller(server, options.kill_stub, options.kill_stub_at, started, events,
                                    Path(config["fault_done_file"]))
            restarter.start()
        try:
            child_result = _run_child(config_path, config, options, started, restarter, log)
        finally:
            if restarter is not None:
                restarter.cancel.set()
                restarter.join()
            if supervisor is not None:
                supervisor.stop()
                restarter.record["supervisor_events"] = [
                    {k: (round(v - restarter.load_started, 3) if k == "time" and restarter.load_started else v)
                     for k, v in e.items()} for e in supervisor.events]
        if before is not None:
            try:
                after = read_metrics()
                segments = [(before, after)]  # a model reloaded keeps its counters (checked: Triton 2.51)
                if isinstance(restarter, _Restarter) and restarter.metrics_before_stop is not None:
                    segments = [(before, restarter.metrics_before_stop), ({}, after)]  # a restart zeroes them
                server_view["models"] = prom.per_model(prom.delta(segments))
            except prom.MetricsError as err:
                server_view["error"] = str(err)

        # 4. the report
        report = _report(options, child_result, read_records(out / "requests.csv"), server_view, restarter,
                         url, server_kind, out, tasks)
        (out / "summary.json").write_text(json.dumps(report, indent=1, default=str))
        if not options.ramp:
            _verdict_into_html(out / "report.html", report)
        log(format_ramp(report) if options.ramp else format_report(report))
        return (1 if report["slo"]["missed"] else 0), report
    finally:
        if work is not None:
            remove_archive(work)
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _validated(options: LoadTestOptions) -> LoadTestOptions:
    """``options`` checked before anything starts (:class:`LoadTestError` names the first problem),
    with the mix in task order and its zero weights dropped."""
    try:
        mix = checked_mix(options.mix)
    except ValueError as err:
        raise LoadTestError(f"--mix: {err}") from None
    try:
        check_sizes(pose_frames=options.pose_frames, pose_batch=options.pose_batch, candidates=options.candidates,
                    dtw_length=options.dtw_length)
    except WorkloadError as err:
        raise LoadTestError(str(err)) from None
    if options.users < 1:
        raise LoadTestError(f"--users: expected >= 1, got {options.users}")
    if "live" in mix and options.streams < 1:
        raise LoadTestError(f"--streams: expected >= 1 live streams, got {options.streams}")
    if "live" in mix and (options.ramp or options.malformed):
        raise LoadTestError("live: --ramp and --malformed are for the other tasks; leave live out of --mix for them")
    if options.spawn_rate <= 0:
        raise LoadTestError(f"--spawn-rate: expected > 0, got {options.spawn_rate}")
    if options.duration <= 0:
        raise LoadTestError(f"--duration: expected > 0, got {options.duration}")
    if options.max_requests < 0:
        raise LoadTestError(f"--max-requests: expected >= 0 (0: no limit), got {options.max_requests}")
    if not 0.0 <= options.malformed < 1.0:
        raise LoadTestError(f"--malformed: expected a share in [0, 1), got {options.malformed}")
    if options.deadline <= 0:
        raise LoadTestError(f"--deadline: expected > 0, got {options.deadline}")
    urls = [options.url] if isinstance(options.url, str) else list(options.url or [])
    metrics = [options.metrics_url] if isinstance(options.metrics_url, str) else list(options.metrics_url or [])
    if len(set(urls)) != len(urls):
        raise LoadTestError(f"--url: each server once, got {', '.join(urls)}")
    if metrics and len(metrics) != len(urls):
        raise LoadTestError(f"--metrics-url: one per --url ({len(urls)}), got {len(metrics)}")
    options = dataclasses.replace(options, url=urls or None, metrics_url=metrics or None)
    if options.kill_stub_at is not None:
        if options.url:
            raise LoadTestError("--kill-stub-at kills a stub of the embedded server: leave out --url")
        if options.restart_at is not None or options.ramp:
            raise LoadTestError("--kill-stub-at goes with neither --restart-at nor --ramp")
        if not 0 < options.kill_stub_at < options.duration:
            raise LoadTestError(f"--kill-stub-at: expected within the run (0, {options.duration:g} s), "
                                f"got {options.kill_stub_at:g} s")
        model = options.kill_stub or next(iter(mix))
        if model not in mix:
            raise LoadTestError(f"--kill-stub: expected a model of the mix ({', '.join(mix)}), got {model!r}")
        options = dataclasses.replace(options, kill_stub=model)
    if options.restart_at is not None:
        if options.url:
            raise LoadTestError("--restart-at restarts the embedded server: leave out --url")
        if options.ramp:
            raise LoadTestError("--restart-at and --ramp do not go together")
        if not 0 < options.restart_at < options.duration:
            raise LoadTestError(f"--restart-at: expected within the run (0, {options.duration:g} s), "
                                f"got {options.restart_at:g} s")
    if options.no_dynamic_batching and options.url:
        raise LoadTestError("--no-dynamic-batching configures the embedded server: leave out --url")
    if options.ramp and (not options.ramp_users or min(options.ramp_users) < 1):
        raise LoadTestError(f"--ramp-users: expected user counts >= 1, got "
                            f"{','.join(map(str, options.ramp_users)) or 'none'}")
    if ("pose" in mix or "live" in mix) and not os.path.exists(options.video):
        raise LoadTestError(f"--video: {options.video} does not exist (Debian's opencv-doc ships vtest.avi)")
    return dataclasses.replace(options, mix=mix)


def _run_child(config_path: Path, config: dict, options: LoadTestOptions, started: threading.Event,
               restarter: _Fault | None, log: Callable[[str], Any]) -> dict:
    """Run loadtests.locust_run; relay its progress; bound its wall time."""
    from posescore.engine.serving.server import PROJECT_ROOT

    env = dict(os.environ)
    if options.ramp:
        steps = len(options.ramp_users) * len(options.mix)
        limit = steps * (options.step_duration + options.warmup + options.deadline + 10) + 120
    else:
        limit = options.duration + 2 * options.deadline + 120
        if config.get("fault_done_file"):
            limit += 300  # the hold after a fault: a server restarted on a busy machine
    child = subprocess.Popen([sys.executable, "-m", "posescore.loadtests.locust_run", str(config_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=str(PROJECT_ROOT))
    timer = threading.Timer(limit, child.kill)
    timer.start()
    tail: list[str] = []
    try:
        for line in child.stdout:
            line = line.rstrip("\n")
            if line.startswith("@@started "):
                if restarter is not None:
                    restarter.load_started = float(line.split()[1])
                started.set()
                log("ramp running" if options.ramp else
                    f"load running: {_who(options)} for {options.duration:g} s at most")
            elif line.startswith("@@step "):
                log("  " + line[len("@@step "):])
            elif line:
                tail = (tail + [line])[-40:]
                if not options.quiet:
                    print(f"[locust] {line}", file=sys.stderr, flush=True)
        code = child.wait()
    finally:
        timer.cancel()
        started.set()  # lets a restarter that never saw the start exit (it is cancelled)
        if child.poll() is None:
            child.kill()
            child.wait()
    result_path = Path(config["out"]) / "locust_result.json"
    if code != 0 or not result_path.exists():
        raise LoadTestError(f"the locust process exited with code {code}"
                            f"{' (killed after ' + str(int(limit)) + ' s)' if code == -9 else ''}; its output ends with:\n"
                            + "\n".join(tail))
    return json.loads(result_path.read_text())


def _who(options) -> str:
    """"4 users", "8 live streams" or both, as the mix has them."""
    parts = [f"{options.users} users"] if set(options.mix) - {"live"} else []
    return " and ".join(parts + ([f"{options.streams} live streams"] if "live" in options.mix else []))


def _report(options, child: dict, records: list[Record], server_view: dict, restarter, url: str, server_kind: str,
            out: Path, tasks: list[str]) -> dict:
    run = {"url": url, "server": server_kind, "users": options.users if set(options.mix) - {"live"} else 0,
           "streams": options.streams if "live" in options.mix else 0, "spawn_rate": options.spawn_rate,
           "mix": format_mix(options.mix), "tasks": tasks, "malformed": options.malformed,
           "deadline_s": options.deadline, "max_requests": options.max_requests, "video": options.video,
           "step_duration": options.step_duration, "warmup": options.warmup}
    client_ok = Counter(r.task for r in records if r.type == "grpc" and r.outcome == "ok")
    server_view["client_ok"] = dict(client_ok)
    if server_view.get("models"):
        short = [m for m in tasks if server_view["models"].get(m, {}).get("requests_ok", 0) < client_ok.get(m, 0)]
        server_view["server_counts_cover_client"] = not short
        if short:
            server_view["note"] = (f"note: the server counted fewer successes than the clients for {', '.join(short)}"
                                   + (" (requests finished between the last read before the restart and the stop "
                                      "are not counted)" if restarter is not None else ""))
    if child.get("servers"):
        report_servers = [{"url": u, **counts} for u, counts in sorted(child["servers"].items())]
    else:
        report_servers = []
    report: dict[str, Any] = {"run": run, "out": str(out), "server": server_view, "servers": report_servers}
    log_file = out / "locust.log"
    if log_file.exists():
        warning = next((line for line in log_file.read_text(errors="replace").splitlines() if "CPU usage" in line), None)
        if warning:
            report["cpu_warning"] = ("locust's own process went over 90% CPU: on this machine the load generator "
                                     "competes with the server for the cores")
    if child["mode"] == "ramp":
        knees = {}
        for task, steps in child["tasks"].items():
            within = [s for s in steps if s["within_slo"]]
            knees[task] = max(within, key=lambda s: s["rps"]) if within else None
        report["ramp"] = {"slo_p99_ms": child["slo_p99_ms"], "tasks": child["tasks"], "knees": knees}
        _write_ramp_csv(out / "ramp.csv", child["tasks"], knees)
        run["seconds"] = child["stopped"] - child["started"]
        report["slo"] = {"spec": ",".join(f"{t}.p99={ms:g}ms" for t, ms in child["slo_p99_ms"].items()),
                         "missed": ramp_missed(child["tasks"])}
        return report

    seconds = child["stopped"] - child["started"]
    run.update(seconds=seconds, stop_reason=child["stop_reason"])
    summary = task_summary(records, tasks, seconds)
    report["tasks"] = summary
    issued = sum(child["issued"].values())
    answered = sum(1 for r in records if r.outcome != "interrupted")
    locust_total = child["locust"].get("Aggregated", {}).get("requests", 0)
    report["accounting"] = {
        "issued": issued, "answered": answered, "unanswered": issued - answered,
        "in_flight_at_end": child["in_flight_at_end"], "locust_requests": locust_total,
        "consistent": issued == answered == locust_total == len(records),
        "issued_by_task": child["issued"],
    }
    if restarter is not None:
        record = dict(restarter.record)
        report["fault"] = fault_summary(records, child["errors_seen"], record, child["started"])
    missed = check_slo(summary, options.slo, tasks, records)
    if not report["accounting"]["consistent"]:
        missed.append(f"requests unaccounted for: {issued} issued, {answered} answered, locust counted "
                      f"{locust_total}")
    if child["locust_exceptions"]:
        missed.append(f"{sum(e['count'] for e in child['locust_exceptions'])} exceptions in the locust users")
    if restarter is not None and "error" in restarter.record:
        missed.append(f"the {restarter.record.get('kind', 'restart')} failed: {restarter.record['error']}")
    report["slo"] = {"spec": str(options.slo), "missed": missed}
    return report


def _verdict_into_html(path: Path, report: dict) -> None:
    """Put the run's verdict at the top of locust's HTML report: the SLO met or missed (and
    why), and the correctness counts per task (answered, right, wrong, errors)."""
    import html

    if not path.exists():
        return
    slo = report["slo"]
    rows = "".join(f"<tr><td>{html.escape(task)}</td><td>{s['requests']}</td><td>{s['ok']}</td>"
                   f"<td>{s['wrong_answers']}</td><td>{s['errors']}</td></tr>"
                   for task, s in report["tasks"].items() if task != "expected_errors" and "wrong_answers" in s)
    verdict = (f'<p id="slo-verdict" data-met="{str(not slo["missed"]).lower()}"><b>SLO {html.escape(slo["spec"])}: '
               + ("met" if not slo["missed"] else "MISSED: " + html.escape("; ".join(slo["missed"]))) + "</b></p>")
    block = (f'<section id="posescore-verdict" style="font-family:sans-serif;margin:1em;padding:1em;'
             f'border:3px solid {"#2a2" if not slo["missed"] else "#c22"}"><h2>posescore verdict</h2>{verdict}'
             f'<table id="correctness" border="1" cellpadding="4"><tr><th>task</th><th>answered</th><th>right</th>'
             f'<th>wrong</th><th>errors</th></tr>{rows}</table></section>')
    text = path.read_text(encoding="utf-8")
    at = text.find("<body")
    at = text.find(">", at) + 1 if at >= 0 else 0
    path.write_text(text[:at] + block + text[at:], encoding="utf-8")


def _write_ramp_csv(path: Path, tasks: dict, knees: dict) -> None:
    import csv

    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["task", "users", "requests", "ok", "failures", "seconds", "rps", "p50_ms", "p95_ms", "p99_ms",
                         "within_slo", "knee"])
        for task, steps in tasks.items():
            for step in steps:
                writer.writerow([task, step["users"], step["requests"], step["ok"], step["failures"],
                                 f"{step['seconds']:.3f}", f"{step['rps']:.3f}",
                                 *(("" if step[k] is None else f"{step[k]:.3f}") for k in ("p50_ms", "p95_ms", "p99_ms")),
                                 step["within_slo"], step is knees.get(task)])
