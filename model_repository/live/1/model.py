"""Live streams, one per correlation ID: engine.serving.live.LiveService answers."""

import json

import numpy as np

from posescore.engine.serving.live import LiveRequest, LiveService, events_json
from posescore.engine.serving.plumbing import (error_response, input_array, input_scalar, output_tensor, parameters,
                                               count, note_probe, sequence_flag, start_metrics)
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        start_metrics(args)
        config = json.loads(args["model_config"])
        idle_us = int(config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 30_000_000))
        self.service = LiveService.from_parameters(parameters(args), idle_s=idle_us / 1e6)
        self.service.warm_up()
        self.reported = {}

    def parse(self, request):
        key = str(request.correlation_id())
        start, end = sequence_flag(request, "START"), sequence_flag(request, "END")
        pose, time = input_array(request, "pose").astype(np.float32), input_array(request, "time")
        pose = pose.reshape((-1, 17, 3)) if pose.size else pose.reshape((0, 17, 3))
        if len(pose) > 1 or time.size != len(pose):
            raise ValueError(f"stream {key}: a request holds one pose [1, 17, 3] and its time [1], or neither; "
                             f"got {len(pose)} pose(s) and {time.size} time(s)")
        options = input_scalar(request, "options", "{}", str) if start else "{}"
        try:
            options = json.loads(options)
        except json.JSONDecodeError as err:
            raise ValueError(f"stream {key}: options: expected a JSON object ({err})") from None
        if not isinstance(options, dict):
            raise ValueError(f"stream {key}: options: expected a JSON object, got {type(options).__name__}")
        reference = input_array(request, "reference", required=False) if start else None
        return LiveRequest(key, start=bool(start), end=bool(end), pose=pose[0] if len(pose) else None,
                           time=float(time.reshape(-1)[0]) if time.size else None,
                           frame=input_scalar(request, "frame", None, int), options=options,
                           reference=None if reference is None else reference.reshape((-1, 17, 3)))

    def execute(self, requests):
        parsed = []
        for request in requests:
            note_probe(request)
            try:
                parsed.append(self.parse(request))
            except ValueError as err:
                parsed.append(err)
        answers = iter(self.service.answer([p for p in parsed if not isinstance(p, Exception)]))
        responses = []
        for item in parsed:
            answer = item if isinstance(item, Exception) else next(answers)
            if isinstance(answer, Exception):
                responses.append(error_response(answer))
            else:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[output_tensor("events", np.array([events_json(answer)], np.object_))]))
        self.report_streams()
        return responses

    def report_streams(self):
        """The streams held, and those opened, ended and freed since the last execute."""
        count("posescore_live_streams", len(self.service))
        for name, total in (("opened", self.service.opened), ("ended", self.service.ended),
                            ("freed", self.service.freed_idle)):
            if total > self.reported.get(name, 0):
                count(f"posescore_live_streams_{name}_total", total - self.reported.get(name, 0))
                self.reported[name] = total
