"""A supervisor that keeps an embedded Triton server serving (``posescore serve`` runs one, and
so does every job's embedded server, through ``engine.serving.server.server_url``).

- A tritonserver that dies is started again, on the same ports and with the same admin key, after
  a backoff that doubles while it keeps dying (1 s up to ``max_backoff``); the log of the run that
  died is kept (``logs_dir/run-N.log``) and the event says where.
- Every ``interval`` seconds each model gets a real, tiny request (Triton's ready endpoints keep
  answering 200 for a model whose python stub was killed). A model that answers neither with its
  result nor with INVALID_ARGUMENT is reloaded through the repository API, which only the
  supervisor's admin key opens; should the reload fail, the server is restarted. A probe past its
  timeout is a busy model, not a dead one (a dead stub answers at once), until it has timed out
  HUNG_AFTER_TIMEOUTS rounds in a row.

``events`` lists what happened (time, what, model or run, detail); ``healthy`` says whether the
last round of probes was answered by every model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from posescore.engine.serving import PROBE_PARAMETER
from posescore.engine.serving.server import TritonServer

#: Statuses of a probe that show the model's stub alive: its answer, or its refusal of the input.
_ALIVE = ("StatusCode.INVALID_ARGUMENT",)
#: The supervisor's events that are repairs, and the kind each counts as in its metrics.
REPAIR_KINDS = {"reloaded": "model_reloaded", "reload failed": "model_reload_failed", "stubs ended": "stubs_ended",
                "restarted": "server_restarted", "restart failed": "server_restart_failed"}
#: A model whose probe runs past its timeout this many rounds in a row is hung (not just busy).
HUNG_AFTER_TIMEOUTS = 3


def _probe_inputs(model: str) -> list:
    """A tiny real request for ``model``: the input tensors."""
    import tritonclient.grpc as grpcclient

    from posescore.kernels.skeleton import NUM_KEYPOINTS

    pose = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    pose[:, 0], pose[:, 1], pose[:, 2] = np.arange(NUM_KEYPOINTS) * 7.0, np.arange(NUM_KEYPOINTS) % 5 * 11.0, 0.9

    def tensor(name, array, datatype="FP32"):
        t = grpcclient.InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array)
        return t

    if model == "score":
        return [tensor("query", pose[None]), tensor("candidates", np.stack([pose, pose])[None])]
    if model == "dtw":
        return [tensor("reference", np.stack([pose] * 3)), tensor("attempt", np.stack([pose] * 4))]
    if model in ("pose", "landmarks"):
        return [tensor("frames", np.full((1, 32, 32, 3), 114, np.uint8), "UINT8")]
    if model == "search":  # no archive named "": refused with INVALID_ARGUMENT by a live stub
        return [tensor("archive", np.array([b""], np.object_), "BYTES"), tensor("query", pose[None])]
    if model == "live":  # a stream of one frame, started and ended (_probe_options)
        return [tensor("pose", pose[None, None]), tensor("time", np.zeros((1, 1)), "FP64"),
                tensor("reference", np.stack([pose, pose])[None]),
                tensor("options", np.array([[b'{"reference_fps": 30}']], np.object_), "BYTES")]
    raise ValueError(f"no probe for model {model!r}")


def _probe_options(model: str) -> dict:
    """The probe's request options: a stream of its own for ``live`` (a random correlation ID in
    [2**62, 2**63), which clients' streams do not use)."""
    if model != "live":
        return {}
    return {"sequence_id": (1 << 62) + secrets.randbelow(1 << 62), "sequence_start": True, "sequence_end": True}


def probe_model(url: str, model: str, timeout: float = 20.0) -> tuple[str, str | None]:
    """Send ``model`` at ``url`` its tiny real request: ``("alive", None)`` when it answered (or
    refused the input: its stub runs), ``("timeout", message)`` when it ran past ``timeout``
    seconds, else ``("failing", message)``. What the supervisor and ``posescore probe`` ask."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        client.infer(model, _probe_inputs(model), client_timeout=timeout, parameters={PROBE_PARAMETER: True},
                     **_probe_options(model))
        return "alive", None
    except InferenceServerException as err:
        if str(err.status()) in _ALIVE:
            return "alive", None
        kind = "timeout" if str(err.status()) == "StatusCode.DEADLINE_EXCEEDED" else "failing"
        return kind, f"{err.status()}: {err.message()}"
    finally:
        client.close()


class Supervisor:
    """Keeps ``server`` (a started :class:`engine.serving.server.TritonServer`) serving; see the module."""

    def __init__(self, server: TritonServer, *, interval: float = 2.0, max_backoff: float = 30.0,
                 probe_timeout: float = 20.0, logs_dir: str | Path | None = None,
                 notify: Callable[[dict], Any] | None = None):
        self.server = server
        self.interval, self.max_backoff, self.probe_timeout = interval, max_backoff, probe_timeout
        self.logs_dir = Path(logs_dir) if logs_dir else Path(tempfile.mkdtemp(prefix="posescore-supervisor-"))
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.notify = notify
        self.events: list[dict] = []
        self.healthy = True
        self.runs = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff, self._last_start = 1.0, None
        self._timeouts: dict[str, int] = {}  # consecutive probe timeouts per model
        self.repairs: dict[tuple[str, str], int] = {}        # (kind, model) -> count
        self.repair_seconds: dict[str, list[float]] = {}     # kind -> [last, sum, count]
        self.probes: dict[tuple[str, str], int] = {}         # (model, outcome) -> count
        self._began: dict[str, float] = {}                   # a repair under way: when it began

    def _event(self, what: str, **detail) -> None:
        event = {"time": time.time(), "what": what, **detail}
        self.events.append(event)
        model = str(detail.get("model", ""))
        subject = model if what in ("model failing", "reloaded", "reload failed") else "server"
        if what in ("model failing", "restarting"):
            self._began.setdefault(subject, time.monotonic())
        kind = REPAIR_KINDS.get(what)
        if kind is not None:
            self.repairs[(kind, model)] = self.repairs.get((kind, model), 0) + 1
        if what in ("reloaded", "reload failed", "restarted"):
            began = self._began.pop(subject, None)
            if began is not None and what != "reload failed":
                last, total, count = self.repair_seconds.get(kind, [0.0, 0.0, 0])
                took = time.monotonic() - began
                self.repair_seconds[kind] = [took, total + took, count + 1]
        if self.notify is not None:
            self.notify(event)

    def metrics_text(self) -> str:
        """The supervisor's counters in Prometheus' text format (the server's metrics front adds them
        to Triton's): repairs by kind and model, how long they took, probes by outcome, health."""
        lines = ["# HELP posescore_supervisor_repairs_total Repairs the supervisor made, by kind and model",
                 "# TYPE posescore_supervisor_repairs_total counter"]
        lines += [f'posescore_supervisor_repairs_total{{kind="{k}",model="{m}"}} {n}'
                  for (k, m), n in sorted(self.repairs.items())]
        lines += ["# HELP posescore_supervisor_repair_seconds Time from a failure seen to its repair done",
                  "# TYPE posescore_supervisor_repair_seconds summary"]
        for kind, (last, total, count) in sorted(self.repair_seconds.items()):
            lines += [f'posescore_supervisor_repair_seconds_sum{{kind="{kind}"}} {total:.3f}',
                      f'posescore_supervisor_repair_seconds_count{{kind="{kind}"}} {count}',
                      f'posescore_supervisor_last_repair_seconds{{kind="{kind}"}} {last:.3f}']
        lines += ["# HELP posescore_supervisor_probes_total The supervisor's probes, by model and outcome",
                  "# TYPE posescore_supervisor_probes_total counter"]
        lines += [f'posescore_supervisor_probes_total{{model="{m}",outcome="{o}"}} {n}'
                  for (m, o), n in sorted(self.probes.items())]
        lines += ["# HELP posescore_supervisor_healthy 1 when every model answered the last probes",
                  "# TYPE posescore_supervisor_healthy gauge", f"posescore_supervisor_healthy {int(self.healthy)}",
                  "# HELP posescore_supervisor_server_runs tritonserver processes started so far",
                  "# TYPE posescore_supervisor_server_runs gauge", f"posescore_supervisor_server_runs {self.runs}"]
        return "\n".join(lines) + "\n"

    # -- one round -----------------------------------------------------------------------------
    def probe(self, model: str) -> str | None:
        """None when ``model`` answered a tiny request (or refused its input), else what went wrong;
        a timeout counts only after HUNG_AFTER_TIMEOUTS rounds in a row."""
        state, problem = probe_model(self.server.grpc_url, model, self.probe_timeout)
        self.probes[(model, state)] = self.probes.get((model, state), 0) + 1
        if state == "timeout":
            # A dead stub answers at once ("not healthy"); a slow answer is a busy model (a job's
            # long batches queue before the probe), hung only when it stays so for several rounds.
            self._timeouts[model] = self._timeouts.get(model, 0) + 1
            return problem if self._timeouts[model] >= HUNG_AFTER_TIMEOUTS else None
        self._timeouts[model] = 0
        return problem

    def restart(self, reason: str) -> None:
        """Stop what is left of the server, keep its log, start it again (same ports)."""
        kept = self.logs_dir / f"run-{self.runs}.log"
        with contextlib.suppress(OSError):
            shutil.copy2(self.server.log_path, kept)
        self.server.stop()
        # 1 s after a server that ran a while; twice the last wait after one that died within a minute.
        recent = self._last_start is not None and time.monotonic() - self._last_start < 60
        delay = min(self.max_backoff, self._backoff * 2) if recent else 1.0
        self._event("restarting", run=self.runs, reason=reason, log=str(kept), backoff_s=delay)
        while not self._stop.wait(delay):
            try:
                self.server.start()
                self._backoff, self._last_start = delay, time.monotonic()
                self.runs += 1
                self._event("restarted", run=self.runs)
                return
            except Exception as err:  # noqa: BLE001 - keep trying, longer apart
                self._event("restart failed", run=self.runs, reason=str(err)[-500:])
                delay = min(self.max_backoff, delay * 2)

    def check_once(self) -> None:
        """One round: restart a dead server; probe every model, reload one that fails."""
        if not self.server.is_running():
            code = self.server.process.returncode if self.server.process is not None else None
            self.healthy = False
            self.restart(f"tritonserver exited with code {code}")
            return
        import tritonclient.grpc as grpcclient

        failing = {model: problem for model in self.server.model_names if (problem := self.probe(model))}
        self.healthy = not failing
        for model, problem in failing.items():
            self._event("model failing", model=model, reason=problem[:500])
            client = grpcclient.InferenceServerClient(self.server.grpc_url)
            try:
                before = set(self.server.stub_pids(model))
                # A load of a loaded model whose files did not change is a no-op: unload it first
                # (Triton ends the dead stub's instance), then load it, which starts a new stub.
                client.unload_model(model, headers=self.server.admin_headers)
                client.load_model(model, headers=self.server.admin_headers)
                self._end_leftover_stubs(model, before)
                still = self.probe(model)
                if still is not None:
                    raise RuntimeError(f"still failing after the reload: {still}")
                self._event("reloaded", model=model)
            except Exception as err:  # noqa: BLE001 - then the whole server
                self._event("reload failed", model=model, reason=str(err)[:500])
                self.restart(f"model {model} could not be reloaded")
                return
            finally:
                client.close()
        self.healthy = True  # every failing model answered its probe after its reload

    def _end_leftover_stubs(self, model: str, before: set[int]) -> None:
        """Kill the stubs of ``model`` from before its reload that are still alive: with several
        instances, Triton's unload leaves the killed stub's siblings running beside the new ones."""
        leftover = sorted(before & set(self.server.stub_pids(model)))
        for pid in leftover:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftover:
            self._event("stubs ended", model=model, pids=leftover)

    # -- the thread ----------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
            except Exception as err:  # noqa: BLE001 - a supervisor that dies supervises nothing
                self._event("supervisor error", reason=str(err)[:500])

    def start(self) -> "Supervisor":
        self.server.metrics_sources.append(self.metrics_text)
        self._thread = threading.Thread(target=self.run, name="posescore-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.probe_timeout + 5)
        with contextlib.suppress(ValueError):
            self.server.metrics_sources.remove(self.metrics_text)

    def __enter__(self) -> "Supervisor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



@contextlib.contextmanager
def server_url(url: str | None, *, notify=None, **server_options) -> Iterator[str]:
    """Yield ``url`` when given; otherwise start an embedded server for the block, supervised as
    ``posescore serve``'s is (``engine.serving.supervisor.Supervisor``: a dead tritonserver started again,
    a model whose stub died reloaded; ``notify(event)`` hears of it), and yield its URL. The
    clients retry through either while their deadline lasts, so a job rides through them."""
    if url:
        yield url
        return
    with TritonServer(**server_options) as server, Supervisor(server, notify=notify):
        yield server.grpc_url
