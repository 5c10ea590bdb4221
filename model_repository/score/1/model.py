"""Pose scoring: one query pose vs N candidates -> scores [N], part scores [N, 6] (0-100)."""

from engine.services import score_answer, warm_up_score
from engine.triton_models import input_scalar, instance_xp, output_tensor, poses_input, serve_batch


class TritonPythonModel:
    def initialize(self, args):
        self.xp = instance_xp(args)
        warm_up_score(self.xp)

    def parse(self, request):
        return (poses_input(request, "query", self.xp), poses_input(request, "candidates", self.xp),
                input_scalar(request, "metric", "cosine", str), input_scalar(request, "mirror", False, bool))

    def compute(self, items):
        answers = [score_answer(*item) for item in items]
        return [[output_tensor("scores", a.scores), output_tensor("part_scores", a.part_scores)] for a in answers]

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
