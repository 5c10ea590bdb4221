"""Pose scoring: one query pose vs N candidates -> scores [N], part scores [N, 6] (0-100).

Each request is one question with a batch dimension of 1; the questions of a batch are scored
together (engine.analysis.answers.score_answers), a question that cannot be scored failing alone.
"""

from posescore.engine.analysis.answers import MAX_SCORE_CANDIDATES, score_answers, warm_up_score
from posescore.engine.serving.plumbing import (RequestError, input_scalar, instance_xp, output_tensor, parameters,
                                               poses_input, serve_batch, start_metrics)


class TritonPythonModel:
    def initialize(self, args):
        start_metrics(args)
        self.xp = instance_xp(args)
        self.max_candidates = int(parameters(args).get("max_candidates", MAX_SCORE_CANDIDATES))
        warm_up_score(self.xp)

    def parse(self, request):
        query = poses_input(request, "query", self.xp)
        candidates = poses_input(request, "candidates", self.xp)
        if query.shape[0] != 1 or candidates.shape[0] != 1:
            raise RequestError(f"query {list(query.shape)}, candidates {list(candidates.shape)}: expected one "
                               f"question per request (batch dimension 1)")
        if candidates.shape[1] > self.max_candidates:
            raise RequestError(f"candidates: {candidates.shape[1]:,} in one request, over this server's bound of "
                               f"{self.max_candidates:,} (parameter max_candidates): split them into several requests")
        return (query[0], candidates[0], input_scalar(request, "metric", "cosine", str),
                input_scalar(request, "mirror", False, bool))

    def compute(self, questions):
        return [a if isinstance(a, Exception) else
                [output_tensor("scores", a.scores[None]), output_tensor("part_scores", a.part_scores[None])]
                for a in score_answers(questions)]

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
