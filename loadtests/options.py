"""The options of ``posescore loadtest``: their defaults, parsers and the :class:`LoadTestOptions`
that :func:`loadtests.runner.run_loadtest` takes.

Only the standard library (and the constants of engine.media.samples) here: every ``posescore``
command builds the loadtest parser, and this module is all that costs it (the runner, the workload and locust load when a load test runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from posescore.engine.media import samples as media

TASKS = ("pose", "score", "dtw", "search", "live")
SAMPLE_VIDEO = str(media.SAMPLE_VIDEO)

DEFAULT_MIX = "pose=1,score=4,dtw=1,search=1"
#: The SLOs a run is held to when --slo is not given: no error, and a p99 per task that a CPU
#: server meets at the default load (a GPU's are lower: give --slo).
DEFAULT_SLO = "errors=0,p99=1s,pose.p99=2s,search.p99=2s,live.p99=250ms"
DEFAULT_RAMP_USERS = (1, 2, 4, 8, 16)
DEFAULT_RAMP_P99_MS = 500.0


class LoadTestError(RuntimeError):
    """The load test could not run (bad options, no server, no workload); exit code 2."""


# -- option values ---------------------------------------------------------------------------------
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"60s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min|m|h|)\s*", str(text))
    if not match:
        raise ValueError(f"expected a duration like 60s, 2m, 500ms, got {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_mix(text: str) -> dict[str, int]:
    """``{"pose": 1, "score": 4, ...}`` from ``"pose=1,score=4,..."`` (tasks left out: weight 0),
    checked by :func:`checked_mix`."""
    mix = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, _, weight = part.partition("=")
        name = name.strip()
        try:
            mix[name] = int(weight) if weight.strip() else 1
        except ValueError:
            raise ValueError(f"{name}: expected an integer weight, got {weight!r}") from None
    return checked_mix(mix)


def checked_mix(mix: dict[str, int]) -> dict[str, int]:
    """``mix`` ({task: weight}) in task order without its zero weights; ValueError for an unknown
    task, a weight that is not an integer >= 0, or no weight > 0."""
    for name, weight in mix.items():
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"{name}: expected an integer weight >= 0, got {weight!r}")
    if not any(mix.values()):
        raise ValueError(f"expected at least one task with a weight > 0, got {format_mix(mix)!r}")
    return {task: mix[task] for task in TASKS if mix.get(task)}


@dataclass
class Slo:
    """Latency limits in ms per ``(task, percentile)`` (task ``"*"``: every task) and the errors
    allowed: a count (``errors=0``) or a share of the requests (``errors=0.1%``)."""

    latency: dict[tuple[str, int], float] = field(default_factory=dict)
    max_errors: int | None = None
    max_error_share: float | None = None

    def limit(self, task: str, q: int) -> float | None:
        return self.latency.get((task, q), self.latency.get(("*", q)))

    def __str__(self) -> str:
        parts = [f"{'' if t == '*' else t + '.'}p{q:g}={ms:g}ms" for (t, q), ms in self.latency.items()]
        if self.max_errors is not None:
            parts.append(f"errors={self.max_errors}")
        if self.max_error_share is not None:
            parts.append(f"errors={self.max_error_share * 100:g}%")
        return ",".join(parts) or "none"


def parse_slo(text: str) -> Slo:
    """An :class:`Slo` from ``"p99=100ms,errors=0"``; ``score.p99=50ms`` limits one task; a latency
    without unit is in ms; ``errors=1%`` allows a share."""
    slo = Slo()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key == "errors":
            if value.endswith("%"):
                slo.max_error_share = float(value[:-1]) / 100.0
            elif value.isdigit():
                slo.max_errors = int(value)
            else:
                raise ValueError(f"errors: expected a count or a percentage, got {value!r}")
            continue
        task, _, percentile = key.rpartition(".")
        match = re.fullmatch(r"p(\d{1,2}(?:\.\d+)?)", percentile)
        if not match or (task and task not in TASKS):
            raise ValueError(f"expected pNN=<time>, TASK.pNN=<time> or errors=N, got {part!r}")
        q = float(match[1])
        ms = parse_duration(value) * 1e3 if re.search(r"[a-z]$", value) else float(value)
        slo.latency[(task or "*", int(q) if q.is_integer() else q)] = ms
    return slo


def format_mix(mix: dict[str, int]) -> str:
    return ",".join(f"{task}={weight}" for task, weight in mix.items())


def parse_user_counts(text: str) -> tuple[int, ...]:
    """``(1, 2, 4, 8)`` from ``"1,2,4,8"`` (the runner checks that each is >= 1)."""
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected user counts like 1,2,4,8, got {text!r}") from None


# -- options ----------------------------------------------------------------------------------------
@dataclass
class LoadTestOptions:
    """Everything ``posescore loadtest`` takes, with its defaults: the command line's defaults are
    these (loadtests/cli.py says what each means; ``ramp_all_steps`` is ``--all-steps``)."""

    url: str | list[str] | None = None  # several: the users' clients balance over them
    metrics_url: str | list[str] | None = None  # one per url
    archive_root: str | None = None
    users: int = 4
    streams: int = 8  # live streams, beside the users, when live is in the mix
    spawn_rate: float = 10.0
    duration: float = 60.0
    max_requests: int = 100_000
    mix: dict[str, int] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    slo: Slo = field(default_factory=lambda: parse_slo(DEFAULT_SLO))
    out: str = "loadtest-report"
    video: str = SAMPLE_VIDEO
    deadline: float = 30.0
    malformed: float = 0.0
    restart_at: float | None = None
    kill_stub_at: float | None = None
    kill_stub: str | None = None
    ramp: bool = False
    ramp_users: tuple[int, ...] = DEFAULT_RAMP_USERS
    ramp_all_steps: bool = False
    step_duration: float = 10.0
    warmup: float = 2.0
    no_dynamic_batching: bool = False
    model_repository: str | None = None
    candidates: int = 1000
    pose_batch: int = 1
    pose_frames: int = 8
    dtw_length: int = 90
    seed: int = 0
    quiet: bool = False
