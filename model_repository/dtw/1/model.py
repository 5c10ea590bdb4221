"""DTW of two movements -> distance, 0-100 score, part scores along the path, the path on request."""

from posescore.engine.analysis.answers import MAX_DTW_CELLS, DtwQuestion, check_dtw_cost, dtw_answers, warm_up_dtw
from posescore.engine.serving.plumbing import (input_scalar, instance_xp, output_tensor, parameters, poses_input,
                                               serve_batch, start_metrics)


class TritonPythonModel:
    def initialize(self, args):
        start_metrics(args)
        self.xp = instance_xp(args)
        self.max_cells = int(parameters(args).get("max_cells", MAX_DTW_CELLS))
        warm_up_dtw(self.xp)

    def parse(self, request):
        question = DtwQuestion(poses_input(request, "reference", self.xp), poses_input(request, "attempt", self.xp),
                               input_scalar(request, "window", None, int), input_scalar(request, "mirror", False, bool),
                               input_scalar(request, "return_path", False, bool))
        check_dtw_cost(len(question.reference), len(question.attempt), question.mirror, self.max_cells)
        return question

    def compute(self, questions):
        xp = self.xp
        return [[output_tensor("distance", xp.asarray([a.distance], xp.float32)),
                 output_tensor("score", xp.asarray([a.score], xp.float32)),
                 output_tensor("part_scores", a.part_scores),
                 output_tensor("mirrored", xp.asarray([a.mirrored])),
                 output_tensor("path", a.path if a.path is not None else xp.zeros((0, 2), xp.int32))]
                for a in dtw_answers(questions)]

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
