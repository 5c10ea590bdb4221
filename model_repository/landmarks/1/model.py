"""Landmarks: RGB frames UINT8 [H, W, 3] -> keypoints [P, 17, 3], boxes, scores, count (the ``pose``
model's answer, asked through BLS) and every person's 33 landmarks [P, 33, 5] (x, y, z pixels,
visibility, presence), world landmarks [P, 33, 3] (metres) and pose flags [P]
(engine.serving.landmarker.Landmarker: aligned crops, BlazePose GHUM full in onnxruntime).
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from posescore.engine.serving.landmarker import Landmarker
from posescore.engine.serving.plumbing import (frames_input, output_tensor, parameters, serve_batch,
                                               start_metrics)

POSE_OUTPUTS = ("keypoints", "boxes", "scores", "count")


class TritonPythonModel:
    def initialize(self, args):
        start_metrics(args)
        params = parameters(args)
        onnx_file = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.exists(onnx_file):
            raise RuntimeError(f"{onnx_file} is missing: run `posescore models export`")
        device_id = int(args["model_instance_device_id"]) if args.get("model_instance_kind") == "GPU" else None
        self.landmarker = Landmarker(onnx_file, threads=int(params.get("intra_op_threads", 0)), device_id=device_id)
        self.landmarker.warm_up()

    def parse(self, request):
        return frames_input(request)

    def _pose(self, frames):
        """The pose model's answer for ``frames``, through BLS."""
        response = pb_utils.InferenceRequest(model_name="pose", requested_output_names=list(POSE_OUTPUTS),
                                             inputs=[pb_utils.Tensor("frames", frames)]).exec()
        if response.has_error():
            raise RuntimeError(f"the pose model failed: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in POSE_OUTPUTS]

    def compute(self, batches):
        # One pose request per frame size (the batch's frames are at most max_batch_size, as pose's).
        people: list = [None] * len(batches)
        by_size: dict = {}
        for n, frames in enumerate(batches):
            by_size.setdefault(frames.shape[1:3], []).append(n)
        for owners in by_size.values():
            try:
                answer = self._pose(np.concatenate([batches[n] for n in owners]))
            except Exception as err:  # noqa: BLE001 - the failure of these requests
                for n in owners:
                    people[n] = err
                continue
            start = 0
            for n in owners:
                stop = start + len(batches[n])
                people[n] = [array[start:stop] for array in answer]
                start = stop
        good = [n for n, found in enumerate(people) if not isinstance(found, Exception)]
        marks = self.landmarker.landmarks_many([(batches[n], people[n][0], people[n][1], people[n][3].reshape(-1))
                                                for n in good])
        out: list = list(people)
        for n, found in zip(good, marks):
            keypoints, boxes, scores, count = people[n]
            out[n] = [output_tensor("keypoints", keypoints), output_tensor("boxes", boxes),
                      output_tensor("scores", scores), output_tensor("count", count.astype(np.int32)),
                      output_tensor("landmarks", found.landmarks), output_tensor("world_landmarks", found.world),
                      output_tensor("pose_flags", found.flags)]
        return out

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
