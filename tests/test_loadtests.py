"""loadtests/: the locust load test against the real embedded Triton server on loopback.

The smoke run and the fault run (``test_fault_*``: the server restarted mid-run; select it with
``-k fault``) run the whole ``posescore loadtest`` (locust in its own gevent process, real gRPC,
every answer checked); the other tests are fast checks of the pieces. No timing is asserted.
"""

import argparse
import csv
import dataclasses
import json
import re

import numpy as np
import pytest

from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY
from posescore.loadtests import cli, metrics
from posescore.loadtests.options import (TASKS, LoadTestError, LoadTestOptions, parse_duration, parse_mix,
                                         parse_slo)
from posescore.loadtests.report import Record, ramp_missed, step_figures
from posescore.loadtests.runner import run_loadtest, strip_dynamic_batching
from posescore.loadtests.workload import check_search


def read_csv(path):
    with open(path, newline="") as src:
        return list(csv.DictReader(src))


# -- the pieces ------------------------------------------------------------------------------------
def test_option_values():
    assert [parse_duration(t) for t in ("60s", "2m", "500ms", "1.5", "1h")] == [60, 120, 0.5, 1.5, 3600]
    assert parse_mix("pose=1,score=4,dtw=1,search=1") == {"pose": 1, "score": 4, "dtw": 1, "search": 1}
    assert parse_mix("score=2, dtw=0") == {"score": 2}
    slo = parse_slo("p99=100ms,score.p99=0.05s,p50=20,errors=0")
    assert slo.limit("pose", 99) == 100 and slo.limit("score", 99) == 50 and slo.limit("dtw", 50) == 20
    assert slo.max_errors == 0 and parse_slo("errors=0.5%").max_error_share == pytest.approx(0.005)
    # With no --slo, every task has a p99 and no error is allowed (the default is stated in --help).
    default = LoadTestOptions().slo
    assert default.max_errors == 0 and all(default.limit(task, 99) for task in TASKS)
    for bad, call in (("10 parsecs", parse_duration), ("jump=1", parse_mix), ("score=0", parse_mix),
                      ("p99", parse_slo), ("latency=5ms", parse_slo), ("errors=some", parse_slo)):
        with pytest.raises(ValueError):
            call(bad)


def test_add_parser_registers_loadtest():
    parser = argparse.ArgumentParser(prog="posescore")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadtest", "--users", "2", "--duration", "5s", "--mix", "score=1",
                              "--slo", "p99=80ms,errors=0", "--restart-at", "2s"])
    assert args.func is cli.run
    assert (args.users, args.duration, args.mix, args.restart_at) == (2, 5.0, {"score": 1}, 2.0)
    assert args.slo.limit("score", 99) == 80 and args.slo.max_errors == 0
    assert cli.options_from(parser.parse_args(["loadtest"])) == LoadTestOptions()  # one set of defaults


@pytest.mark.parametrize("argv, message", [
    (["--url", "127.0.0.1:1", "--restart-at", "5s", "--mix", "score=1"], "leave out --url"),
    (["--restart-at", "90s", "--duration", "10s"], "within the run"),
    (["--kill-stub-at", "3s", "--kill-stub", "pose", "--mix", "score=1"], "--kill-stub: expected a model of the mix"),
    (["--url", "127.0.0.1:1", "--kill-stub-at", "3s", "--mix", "score=1"], "leave out --url"),
    (["--url", "127.0.0.1:1", "--url", "127.0.0.1:2", "--metrics-url", "http://x:1/metrics", "--mix", "score=1"],
     "--metrics-url: one per --url"),
    (["--url", "127.0.0.1:1", "--mix", "search=1"], "--archive-root"),
    (["--malformed", "1.5"], "--malformed"),
    (["--pose-batch", "0"], "pose batch: expected 1..16"),
    (["--mix", "score=1", "--candidates", "0"], "candidates: expected >= 1"),
    (["--ramp", "--ramp-users", "2,0"], "--ramp-users: expected user counts >= 1, got 2,0"),
])
def test_bad_options_exit_2_with_a_clear_message(argv, message, tmp_path, capsys):
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_options_built_in_python_are_checked_like_the_command_line(tmp_path):
    for options, message in ((LoadTestOptions(mix={"score": 0, "dtw": 0}), "--mix: expected at least one task"),
                             (LoadTestOptions(mix={"jump": 1}), "--mix: unknown task 'jump'"),
                             (LoadTestOptions(pose_frames=0), "pose frames: expected >= 1")):
        with pytest.raises(LoadTestError, match=re.escape(message)):
            run_loadtest(dataclasses.replace(options, out=str(tmp_path)))


def test_strip_dynamic_batching_copies_the_repository(tmp_path):
    copy = strip_dynamic_batching(DEFAULT_MODEL_REPOSITORY, tmp_path / "repo")
    pose = (copy / "pose" / "config.pbtxt").read_text()
    original = (DEFAULT_MODEL_REPOSITORY / "pose" / "config.pbtxt").read_text()
    assert "dynamic_batching" in original and "dynamic_batching" not in pose
    assert "max_batch_size: 16" in pose and pose.count("{") == pose.count("}")
    assert "instance_group" in pose and "parameters" in pose
    assert (copy / "score" / "config.pbtxt").read_text() == (DEFAULT_MODEL_REPOSITORY / "score" /
                                                            "config.pbtxt").read_text()


def test_metrics_parse_and_delta():
    text = """# TYPE nv_inference_request_success counter
nv_inference_request_success{model="score",version="1"} 10
nv_inference_request_failure{model="score",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="score",reason="REJECTED",version="1"} 1
nv_inference_exec_count{model="score",version="1"} 5
nv_inference_count{model="score",version="1"} 10
nv_inference_queue_duration_us{model="score",version="1"} 20000
nv_inference_compute_infer_duration_us{model="score",version="1"} 50000
nv_cpu_utilization 0.5
"""
    sample = metrics.parse(text)
    assert sample["score"]["nv_inference_request_failure"] == 3 and "" not in sample
    before = {"score": {"nv_inference_request_success": 4, "nv_inference_queue_duration_us": 8000,
                        "nv_inference_compute_infer_duration_us": 20000, "nv_inference_count": 4,
                        "nv_inference_exec_count": 2}}
    report = metrics.per_model(metrics.delta([(before, sample)]))["score"]
    assert report["requests_ok"] == 6 and report["requests_failed"] == 3 and report["avg_batch"] == 2.0
    assert report["queue_ms"] == pytest.approx(2.0) and report["compute_infer_ms"] == pytest.approx(5.0)
    # a restart: two lives, the second counting from zero
    restarted = metrics.delta([(before, sample), ({}, {"score": {"nv_inference_request_success": 7}})])
    assert restarted["score"]["nv_inference_request_success"] == 13


def test_search_check_allows_ties_in_either_order():
    from posescore.clients import SearchMatch

    want = [{"video_id": "a", "start_frame": f, "end_frame": f, "track": 0, "score": s}
            for f, s in ((1, 99.0), (2, 90.0), (3, 90.0), (4, 80.0))]
    got = [SearchMatch("a", "a.mp4", w["start_frame"], w["end_frame"], 0, 0, 0, w["score"]) for w in want]
    assert check_search(got, want) is None
    assert check_search([got[0], got[2], got[1], got[3]], want) is None  # a tie swapped
    other = SearchMatch("b", "b.mp4", 1, 1, 0, 0, 0, 99.0)  # the right score, the wrong match
    assert "matches 0..0" in check_search([other, *got[1:]], want)
    assert check_search([*got[:3], SearchMatch("b", "b.mp4", 9, 9, 0, 0, 0, 80.0)], want) is None  # the last group
    assert "scores" in check_search([*got[:3], SearchMatch("a", "a.mp4", 4, 4, 0, 0, 0, 70.0)], want)


# -- the smoke run ---------------------------------------------------------------------------------
def test_smoke_run_writes_reports_and_the_counts_add_up(triton_server, archive_root, tmp_path):
    out = tmp_path / "report"
    code = cli.main(["--url", triton_server.grpc_url, "--metrics-url", triton_server.metrics_url,
                     "--archive-root", str(archive_root), "--users", "3", "--spawn-rate", "10", "--pose-frames", "4",
                     "--duration", "10s", "--max-requests", "5000", "--mix", "pose=1,score=4,dtw=1,search=1",
                     "--malformed", "0.1", "--slo", "errors=0", "--out", str(out), "--quiet"])
    assert code == 0
    for name in ("locust_stats.csv", "locust_failures.csv", "locust_exceptions.csv", "locust_stats_history.csv",
                 "report.html", "requests.csv", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert "locust" in page.lower()
    # The verdict on top of locust's charts: the SLO, and answered / right / wrong per task.
    assert '<p id="slo-verdict" data-met="true"><b>SLO errors=0: met</b></p>' in page
    assert page.index('id="posescore-verdict"') < page.index("</body>")
    summary = json.loads((out / "summary.json").read_text())
    tasks = summary["tasks"]

    # locust's CSV: one row per task (and per malformed kind), their sum is the aggregate
    rows = read_csv(out / "locust_stats.csv")
    aggregate = next(r for r in rows if r["Name"] == "Aggregated")
    per_name = {r["Name"]: r for r in rows if r["Name"] != "Aggregated"}
    assert sum(int(r["Request Count"]) for r in per_name.values()) == int(aggregate["Request Count"])
    assert int(aggregate["Failure Count"]) == 0 and read_csv(out / "locust_failures.csv") == []
    for task in ("pose", "score", "dtw", "search"):
        assert tasks[task]["requests"] > 0 and tasks[task]["failures"] == 0
        assert int(per_name[task]["Request Count"]) == tasks[task]["requests"]
        assert per_name[task]["Type"] == "grpc"
    assert sum(tasks[t]["requests"] for t in ("pose", "score", "dtw", "search")) == tasks["all"]["requests"]
    bad = tasks["expected_errors"]
    assert bad["requests"] > 0 and bad["refused_as_expected"] == bad["requests"] and bad["failures"] == 0
    assert bad["requests"] + tasks["all"]["requests"] == int(aggregate["Request Count"])
    assert all(per_name[name]["Type"] == "grpc-expected-error" for name in bad["by_kind"])
    assert tasks["all"]["wrong_answers"] == 0 and tasks["all"]["ok"] == tasks["all"]["requests"]

    # nothing dropped: every request issued was answered and counted by locust
    accounting = summary["accounting"]
    assert accounting["consistent"] and accounting["unanswered"] == 0
    assert accounting["issued"] == int(aggregate["Request Count"]) == len(read_csv(out / "requests.csv"))

    # Triton's view: at least as many successes as the clients counted (the answers checked at
    # idle before the run are outside the window; malformed requests its python models refuse are
    # counted as successes by Triton)
    server = summary["server"]
    for task in ("pose", "score", "dtw", "search"):
        model = server["models"][task]
        assert model["requests_ok"] >= server["client_ok"][task] == tasks[task]["ok"]
        assert model["queue_ms"] is not None and model["compute_infer_ms"] > 0
    assert summary["slo"]["missed"] == []


def test_live_streams_of_real_poses_agree_with_reps_offline(triton_server, tmp_path):
    """--mix live=1 --streams 2: two 30 fps streams of a real walker at their frame rate; every
    repetition event agrees with reps' offline answer, every frame is answered and counted."""
    import shutil
    import subprocess

    from posescore.loadtests.options import SAMPLE_VIDEO

    if shutil.which("ffmpeg") is None:
        pytest.skip("Debian's ffmpeg is not installed (make media installs it)")
    clip = tmp_path / "walkers.mp4"  # the stretch of vtest.avi where one walker is seen for long
    subprocess.run(["ffmpeg", "-loglevel", "error", "-ss", "20", "-t", "6", "-i", SAMPLE_VIDEO, "-c:v", "mpeg4",
                    "-q:v", "3", str(clip)], check=True)
    out = tmp_path / "report"
    code = cli.main(["--url", triton_server.grpc_url, "--metrics-url", triton_server.metrics_url, "--video", str(clip),
                     "--mix", "live=1", "--streams", "2", "--duration", "8s", "--max-requests", "5000", "--slo", "errors=0",
                     "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, summary["slo"]
    live = summary["tasks"]["live"]
    assert live["requests"] > 100 and live["failures"] == 0 and live["wrong_answers"] == 0
    names = [r["name"] for r in read_csv(out / "requests.csv")]
    assert names.count("live/start") >= 2 and names.count("live/end") >= 1  # whole streams checked
    assert summary["accounting"]["consistent"] and summary["accounting"]["unanswered"] == 0
    assert summary["run"]["streams"] == 2


# -- faults ----------------------------------------------------------------------------------------
@pytest.mark.fault
def test_fault_server_restart_mid_run_drops_nothing_and_recovers(tmp_path, capsys):
    out = tmp_path / "fault"
    code = cli.main(["--users", "3", "--duration", "8s", "--restart-at", "3s", "--deadline", "60s",
                     "--mix", "score=2,dtw=1,search=1", "--slo", "errors=0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    fault = summary["fault"]
    restart = fault["restart"]
    assert "error" not in restart and restart["stop_began"] < restart["stopped"] < restart["ready"]
    # the clients saw the server go away (retried, within their deadline) ...
    assert fault["client_errors"] > 0
    assert all(status == "UNAVAILABLE" for status in fault["client_errors_by_status"])
    # ... and every request, those caught by the outage included, got its right answer
    assert fault["failures_during_burst"] == {} and summary["tasks"]["all"]["failures"] == 0
    assert fault["requests_spanning_outage"] > 0
    assert fault["requests_spanning_outage_ok"] == fault["requests_spanning_outage"]
    assert summary["accounting"]["consistent"] and summary["accounting"]["unanswered"] == 0
    # recovered: successes after the restart
    assert fault["recovery_s"] is not None and fault["recovery_s"] > 0
    records = read_csv(out / "requests.csv")
    ready = restart["ready"] + summary_start(out)
    assert sum(1 for r in records if r["outcome"] == "ok" and float(r["start"]) > ready) > 0
    # both lives of the server are counted
    for task in ("score", "dtw", "search"):
        assert summary["server"]["models"][task]["requests_ok"] >= summary["server"]["client_ok"][task]
    assert re.search(r"error burst: \d+ errors seen by the clients", printed)
    assert "recovery:" in printed


@pytest.mark.fault
def test_soak_hostile_requests_and_a_killed_stub_lose_nothing(tmp_path, capsys):
    """A short soak: normal load, malformed and oversized requests (a dtw over the cells bound
    among them), and the score model's python stub SIGKILLed mid-run: the supervisor reloads it,
    the clients retry through it, every request is answered right, none is lost."""
    out = tmp_path / "soak"
    code = cli.main(["--users", "3", "--duration", "16s", "--kill-stub-at", "4s", "--kill-stub", "score",
                     "--malformed", "0.1", "--deadline", "60s", "--mix", "score=3,dtw=1", "--seed", "3",
                     "--slo", "errors=0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    fault = summary["fault"]
    kill = fault["restart"]
    assert "error" not in kill and kill["stop_began"] <= kill["stopped"] < kill["ready"]
    assert any(e["what"] == "reloaded" and e["model"] == "score" for e in kill["supervisor_events"])
    assert fault["client_errors"] > 0  # the clients saw the dead stub, and retried
    assert summary["tasks"]["all"]["failures"] == 0 and summary["tasks"]["all"]["wrong_answers"] == 0
    assert fault["requests_spanning_outage_ok"] == fault["requests_spanning_outage"] > 0
    assert summary["accounting"]["consistent"] and summary["accounting"]["unanswered"] == 0
    refused = summary["tasks"]["expected_errors"]
    assert refused["requests"] > 0 and refused["requests"] == refused["refused_as_expected"], refused
    assert "kill of model score's python stub: at +" in printed and "outage" in printed
    # The supervisor's probes are counted apart: the server's successes are the clients' own.
    model = summary["server"]["models"]["score"]
    assert model["probes"] > 0 and model["requests_ok"] >= summary["server"]["client_ok"]["score"]


def summary_start(out):
    return json.loads((out / "locust_result.json").read_text())["started"]


def test_a_run_over_two_servers_spreads_the_load_and_reports_each(triton_server, tmp_path, capsys):
    """``--url A --url B``: the users' clients balance over both servers (the test's session server
    and a second one), the report says what each answered, Triton's counts of both are summed."""
    from posescore.engine.serving.server import TritonServer

    out = tmp_path / "two"
    with TritonServer(models=["score", "dtw"]) as second:
        code = cli.main(["--url", triton_server.grpc_url, "--url", second.grpc_url,
                         "--metrics-url", triton_server.metrics_url, "--metrics-url", second.metrics_url,
                         "--users", "3", "--duration", "6s", "--mix", "score=3,dtw=1", "--slo", "errors=0",
                         "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    servers = {s["url"]: s for s in summary["servers"]}
    assert set(servers) == {triton_server.grpc_url, second.grpc_url}
    assert all(s["answered"] > 0 and s["unavailable"] == 0 for s in servers.values()), servers
    assert summary["tasks"]["all"]["failures"] == 0 and summary["accounting"]["consistent"]
    answered = sum(s["answered"] for s in servers.values())
    assert answered >= summary["tasks"]["all"]["requests"]  # score calls may split into several requests
    assert f"{second.grpc_url} answered {servers[second.grpc_url]['answered']}" in printed
    models = summary["server"]["models"]
    assert models["score"]["requests_ok"] >= summary["server"]["client_ok"]["score"]  # both servers' counts


def test_ramp_step_figures_and_knee():
    records = [Record("score", "score", "grpc", 0.0, 1.0 + i / 100, 10.0 + i, "ok", "", "", 0) for i in range(50)]
    records += [Record("score", "score", "grpc", 0.0, 1.5, 99.0, "error", "UNAVAILABLE", "gone", 0),
                Record("score", "score", "grpc", 0.0, 2.5, 5.0, "ok", "", "", 0)]  # after the step
    figures = step_figures(records, 1.0, 2.0)
    assert figures["requests"] == 51 and figures["ok"] == 50 and figures["failures"] == 1
    assert figures["rps"] == 50.0
    assert figures["p99_ms"] == pytest.approx(np.percentile([*(np.arange(50) + 10.0), 99.0], 99))


def _step(users, failures, p99, slo=100.0):
    return {"users": users, "failures": failures, "p99_ms": p99,
            "within_slo": failures == 0 and p99 <= slo}


def test_ramp_misses_failures_and_a_task_without_a_knee():
    """A ramp that ends because the p99 grew past the SLO found its knee: nothing missed. Wrong
    answers or errors at any step are missed (the exit code is 1), and so is a task over the SLO
    already at its first step."""
    clean = {"score": [_step(1, 0, 20.0), _step(2, 0, 60.0), _step(4, 0, 150.0)]}
    assert ramp_missed(clean) == []
    wrong = {"score": [_step(1, 0, 20.0), _step(2, 3, 40.0)], "dtw": [_step(1, 0, 30.0)]}
    assert ramp_missed(wrong) == ["score at 2 users: 3 failures"]
    slow = {"dtw": [_step(1, 0, 400.0)]}
    assert ramp_missed(slow) == ["dtw: p99 over the SLO already at 1 users"]
