"""Pose / movement search in archives under the archive root: each request checked and answered by
engine.archive.service.SearchService (its archives kept open, its shard, the merge phases)."""

import math
from functools import partial

import numpy as np

from posescore.engine.archive import CLIP_MIN_SCORE, MOMENT_GAP_S, SearchService
from posescore.engine.serving.plumbing import input_array, input_scalar, output_tensor, parameters, poses_input, serve_batch

#: Output tensors of each hit's fields: (tensor, field, dtype, value where a hit has none); text first.
TEXT = (("video_ids", "video_id"), ("video_names", "video"), ("video_paths", "path"))
NUMBERS = (("start_frames", "start_frame", np.int64, 0), ("end_frames", "end_frame", np.int64, 0),
           ("start_times", "start_time", np.float32, 0), ("end_times", "end_time", np.float32, 0),
           ("tracks", "track", np.int32, 0), ("scores", "score", np.float32, 0), ("segments", "segment", np.int64, 0),
           ("rows", "row", np.int64, 0), ("last_rows", "last_row", np.int64, -1),
           ("keys", "key", np.float32, math.nan), ("costs", "cost", np.float32, math.nan))


class TritonPythonModel:
    def initialize(self, args):
        self.service = SearchService.from_parameters(parameters(args))

    def parse(self, request):
        scalar = partial(input_scalar, request)
        # The archive's path as bytes, as the file system takes them (the client sends os.fsencode's):
        # the stub's embedded Python may run with an ASCII file-system encoding, whatever the locale.
        archive = self.service.archive(scalar("archive", None, decode=False))
        phase = scalar("phase", "", str)
        scored = phase == "clip_score"
        return self.service.request(
            archive, poses_input(request, "query"), k=scalar("k", 10, int), fps=scalar("fps", 0.0, float),
            min_gap=scalar("min_gap", MOMENT_GAP_S, float), start=scalar("start", math.nan, float),
            end=scalar("end", math.nan, float), video=scalar("video", "", str),
            min_score=scalar("min_score", CLIP_MIN_SCORE, float), phase=phase, shard=scalar("shard", "", str),
            count=scalar("count", 0, int), candidates=input_array(request, "candidates") if scored else None,
            candidate_costs=input_array(request, "candidate_costs") if scored else None)

    def compute(self, requests):
        outputs = []
        for answer in map(self.service.answer, requests):  # an ArchiveError fails the batch, told to each
            hits = answer.hits
            outputs.append(
                [output_tensor(name, np.array([(h[key] or "").encode() for h in hits], np.object_)) for name, key in TEXT]
                + [output_tensor(name, np.array([h.get(key, none) for h in hits], dtype))
                   for name, key, dtype, none in NUMBERS]
                + [output_tensor("searched", np.array([answer.searched], np.int64)),
                   output_tensor("searched_shard", np.array([answer.shard.encode()], np.object_)),
                   output_tensor("generation", np.array([answer.generation], np.int64))])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
