"""Triton's own view of a load test: its Prometheus metrics endpoint, read before and after.

Triton's per-model counters (``nv_inference_*``) are cumulative since the server started, so the
run's figures are differences. A server restarted during the run starts again from zero: the
runner reads the metrics just before the restart, and the run's delta is the sum over the
server's lives (requests finished between that last read and the stop are not counted).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections import defaultdict

# Counters summed over every label but the model (version, reason).
COUNTERS = (
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "posescore_probe_requests_total",
)
_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = dict[str, dict[str, float]]  # {model: {counter: value}}


class MetricsError(RuntimeError):
    """The metrics endpoint could not be read."""


def parse(text: str) -> Sample:
    """Per-model sums of :data:`COUNTERS` from Prometheus' text format."""
    sample: Sample = defaultdict(lambda: defaultdict(float))
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match or match["name"] not in COUNTERS:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        try:
            value = float(match["value"])
        except ValueError:
            continue
        sample[labels.get("model", "")][match["name"]] += value
    return {model: dict(values) for model, values in sample.items()}


def scrape(url: str, timeout: float = 5.0) -> Sample:
    """The counters at ``url`` (e.g. ``http://127.0.0.1:8002/metrics``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse(response.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError, ValueError) as err:
        raise MetricsError(f"cannot read the metrics at {url}: {err}") from None


def merge_max(first: Sample | None, second: Sample) -> Sample:
    """Per model and counter, the larger of two samples of the same server life."""
    merged = {model: dict(values) for model, values in (first or {}).items()}
    for model, values in second.items():
        mine = merged.setdefault(model, {})
        for name, value in values.items():
            mine[name] = max(mine.get(name, value), value)
    return merged


def merge_sum(samples: list[Sample]) -> Sample:
    """Per model and counter, the sum over samples of several servers (one sample: itself)."""
    merged: Sample = {}
    for sample in samples:
        for model, values in sample.items():
            mine = merged.setdefault(model, {})
            for name, value in values.items():
                mine[name] = mine.get(name, 0.0) + value
    return merged


def delta(segments: list[tuple[Sample, Sample]]) -> Sample:
    """Sum over ``(before, after)`` pairs of ``after - before``, per model and counter."""
    total: Sample = defaultdict(lambda: defaultdict(float))
    for before, after in segments:
        for model, values in after.items():
            for name, value in values.items():
                was = before.get(model, {}).get(name, 0.0)
                # A counter lower than before was reset (a model reloaded drops its custom metrics).
                total[model][name] += value - was if value >= was else value
    return {model: dict(values) for model, values in total.items()}


def per_model(change: Sample) -> dict[str, dict]:
    """Readable per-model figures of a delta: requests, batches, and mean times per request (ms)."""
    report = {}
    for model, v in sorted(change.items()):
        probes = v.get("posescore_probe_requests_total", 0.0)  # the supervisor's, not the clients'
        ok = v.get("nv_inference_request_success", 0.0) - probes
        failed = v.get("nv_inference_request_failure", 0.0)
        if not ok and not failed:
            continue
        executions = v.get("nv_inference_exec_count", 0.0)
        per_request = lambda name: v.get(name, 0.0) / ok / 1e3 if ok else None  # noqa: E731 - µs -> ms
        report[model] = {
            "requests_ok": int(ok),
            "probes": int(probes),
            "requests_failed": int(failed),
            "inferences": int(v.get("nv_inference_count", 0.0)),
            "executions": int(executions),
            "avg_batch": v.get("nv_inference_count", 0.0) / executions if executions else None,
            "request_ms": per_request("nv_inference_request_duration_us"),
            "queue_ms": per_request("nv_inference_queue_duration_us"),
            "compute_input_ms": per_request("nv_inference_compute_input_duration_us"),
            "compute_infer_ms": per_request("nv_inference_compute_infer_duration_us"),
            "compute_output_ms": per_request("nv_inference_compute_output_duration_us"),
        }
    return report
