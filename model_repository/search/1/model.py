"""Pose / movement search in archives under the archive root: engine.archive.service.SearchService answers."""

import math

import numpy as np

from posescore.engine.archive import CLIP_MIN_SCORE, MOMENT_GAP_S, SearchService
from posescore.engine.serving.plumbing import (input_array, input_scalar, output_tensor, parameters, poses_input,
                                               serve_batch, start_metrics)


class TritonPythonModel:
    def initialize(self, args):
        start_metrics(args)
        self.service = SearchService.from_parameters(parameters(args))

    def parse(self, request):
        # The archive's path as bytes, as the file system takes them (the client sends os.fsencode's):
        # the stub's embedded Python may run with an ASCII file-system encoding, whatever the locale.
        archive = self.service.archive(input_scalar(request, "archive", None, decode=False))
        phase = input_scalar(request, "phase", "", str)
        scored = phase == "clip_score"  # its DTW candidates are sent back to it
        return self.service.request(
            archive, poses_input(request, "query"), k=input_scalar(request, "k", 10, int),
            fps=input_scalar(request, "fps", 0.0, float), min_gap=input_scalar(request, "min_gap", MOMENT_GAP_S, float),
            start=input_scalar(request, "start", math.nan, float), end=input_scalar(request, "end", math.nan, float),
            video=input_scalar(request, "video", "", str),
            min_score=input_scalar(request, "min_score", CLIP_MIN_SCORE, float), phase=phase,
            shard=input_scalar(request, "shard", "", str), count=input_scalar(request, "count", 0, int),
            candidates=input_array(request, "candidates") if scored else None,
            candidate_costs=input_array(request, "candidate_costs") if scored else None)

    def compute(self, requests):
        outputs = []
        for answer in map(self.service.answer, requests):  # an ArchiveError fails the batch, told to each
            text = lambda key: np.array([(h[key] or "").encode() for h in answer.hits], np.object_)  # noqa: E731
            column = lambda key, dtype, none=0: np.array([h.get(key, none) for h in answer.hits], dtype)  # noqa: E731
            outputs.append([
                output_tensor("video_ids", text("video_id")),
                output_tensor("video_names", text("video")),
                output_tensor("video_paths", text("path")),
                output_tensor("start_frames", column("start_frame", np.int64)),
                output_tensor("end_frames", column("end_frame", np.int64)),
                output_tensor("start_times", column("start_time", np.float32)),
                output_tensor("end_times", column("end_time", np.float32)),
                output_tensor("tracks", column("track", np.int32)),
                output_tensor("scores", column("score", np.float32)),
                output_tensor("segments", column("segment", np.int64)),
                output_tensor("rows", column("row", np.int64)),
                output_tensor("last_rows", column("last_row", np.int64, -1)),
                output_tensor("keys", column("key", np.float32, math.nan)),
                output_tensor("costs", column("cost", np.float32, math.nan)),
                output_tensor("searched", np.array([answer.searched], np.int64)),
                output_tensor("searched_shard", np.array([answer.shard.encode()], np.object_)),
                output_tensor("generation", np.array([answer.generation], np.int64)),
            ])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)
