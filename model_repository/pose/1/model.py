"""Pose estimation: RGB frames UINT8 [H, W, 3] -> keypoints [P, 17, 3], boxes [P, 4], scores [P], count.

Frames of all requests in a batch are grouped by size and run together (engine.analysis.answers.PoseDetector:
our letterbox, the ONNX model in onnxruntime, our decoding and NMS).
"""

import os

from posescore.engine.serving.detector import pose_detector
from posescore.engine.serving.plumbing import (frames_input, instance_xp, output_tensor, parameters,
                                               serve_batch, start_metrics)


class TritonPythonModel:
    def initialize(self, args):
        start_metrics(args)
        self.xp = instance_xp(args)
        params = parameters(args)
        onnx_file = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.exists(onnx_file):
            raise RuntimeError(f"{onnx_file} is missing: run `posescore models export`")
        device_id = int(args["model_instance_device_id"]) if args.get("model_instance_kind") == "GPU" else None
        self.detector = pose_detector(onnx_file, params, xp=self.xp, device_id=device_id)
        self.detector.warm_up()

    def parse(self, request):
        return frames_input(request, self.xp)

    def compute(self, batches):
        xp = self.xp
        return [[output_tensor("keypoints", people.keypoints), output_tensor("boxes", people.boxes),
                 output_tensor("scores", people.scores),
                 output_tensor("count", people.counts.astype(xp.int32).reshape(-1, 1))]
                for people in self.detector.detect_many(batches)]

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
