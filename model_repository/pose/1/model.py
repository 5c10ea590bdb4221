"""Pose estimation: RGB frames UINT8 [H, W, 3] -> keypoints [P, 17, 3], boxes [P, 4], scores [P], count.

Frames of all requests in a batch are grouped by size, letterboxed together (kernels.detect), run
through the ONNX model in one onnxruntime call per size, decoded and NMS'd together.
"""

import os

import numpy as np
import onnxruntime as ort

import kernels
from engine.triton_models import RequestError, input_array, instance_xp, output_tensor, parameters, serve_batch


class TritonPythonModel:
    def initialize(self, args):
        self.xp = instance_xp(args)
        params = parameters(args)
        self.max_people = int(params.get("max_people", 20))
        self.image_size = int(params.get("image_size", 640))
        self.confidence = float(params.get("confidence", 0.25))
        self.iou = float(params.get("iou", 0.7))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", 0))
        onnx_file = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.exists(onnx_file):
            raise RuntimeError(f"{onnx_file} is missing: run `posescore models export`")
        providers = ["CPUExecutionProvider"]
        if self.xp is not np and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        self.session = ort.InferenceSession(onnx_file, options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def parse(self, request):
        frames = input_array(request, "frames", self.xp)
        if frames.shape[0] == 0:
            raise RequestError("frames: empty batch, expected at least one frame [H, W, 3]")
        if frames.shape[1] == 0 or frames.shape[2] == 0:
            raise RequestError(f"frames: expected frames of at least 1x1 pixels, got "
                               f"{frames.shape[1]}x{frames.shape[2]}")
        return frames

    def infer(self, images):
        """Raw model output [B, 56, anchors] for letterboxed images [B, 3, h, w] on this backend."""
        if self.xp is np:
            return self.session.run(None, {self.input_name: images})[0]
        return self.xp.asarray(self.session.run(None, {self.input_name: self.xp.asnumpy(images)})[0])

    def compute(self, items):
        xp = self.xp
        results = [None] * len(items)
        by_size = {}
        for n, frames in enumerate(items):
            by_size.setdefault(frames.shape[1:3], []).append(n)
        for (height, width), owners in by_size.items():
            frames = xp.concatenate([items[n] for n in owners]) if len(owners) > 1 else items[owners[0]]
            images, gains, pads = kernels.letterbox(frames, size=self.image_size)
            shapes = np.tile(np.array([height, width], np.int32), (len(frames), 1))
            decoded = kernels.decode_poses(self.infer(images), gains, pads, xp.asarray(shapes),
                                           conf=self.confidence, iou=self.iou, max_people=self.max_people)
            start = 0
            for n in owners:
                stop = start + len(items[n])
                results[n] = [array[start:stop] for array in decoded]
                start = stop
        outputs = []
        for keypoints, boxes, scores, counts in results:
            outputs.append([output_tensor("keypoints", keypoints), output_tensor("boxes", boxes),
                            output_tensor("scores", scores),
                            output_tensor("count", counts.astype(xp.int32).reshape(-1, 1))])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
