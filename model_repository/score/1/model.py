"""Pose scoring: one query pose vs N candidates -> scores [N], part scores [N, 6] (0-100)."""

import kernels
from engine.triton_models import input_scalar, instance_xp, normalized, output_tensor, poses_input, serve_batch


class TritonPythonModel:
    def initialize(self, args):
        self.xp = instance_xp(args)

    def parse(self, request):
        query = poses_input(request, "query", self.xp)
        candidates = poses_input(request, "candidates", self.xp)
        metric = input_scalar(request, "metric", "cosine", str)
        mirror = input_scalar(request, "mirror", False, bool)
        q_vec, q_w = normalized(query, "query")
        vectors, weights = normalized(candidates, "candidates")
        return q_vec, q_w, vectors, weights, metric, mirror

    def compute(self, items):
        outputs = []
        for q_vec, q_w, vectors, weights, metric, mirror in items:
            scores, mirrored = kernels.pose_scores(q_vec, q_w, vectors, weights, metric=metric,
                                                   mirror=mirror, return_mirrored=True)
            parts = kernels.part_scores(q_vec, q_w, vectors, weights, mirror=mirrored)
            outputs.append([output_tensor("scores", scores), output_tensor("part_scores", parts)])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
