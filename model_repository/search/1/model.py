"""Pose / movement search in archives opened under the archive root (engine.archive, engine.search)."""

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from engine import archive as archive_io
from engine.search import CLIP_MIN_SCORE, MAX_CLIP_CELLS, MOMENT_GAP_S, SearchFilter, check_clip_cost, search_archive
from engine.triton_models import RequestError, input_scalar, output_tensor, parameters, poses_input, serve_batch


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        root = params.get("archive_root") or os.environ.get(archive_io.ARCHIVE_ROOT_ENV) or os.getcwd()
        self.root = Path(root).resolve()
        self.max_k = int(params.get("max_k", 10000))
        self.max_open = int(params.get("max_open_archives", 16))
        self.max_clip_cells = int(params.get("max_clip_cells") or MAX_CLIP_CELLS)
        if params.get("mapped_bytes"):
            archive_io.MAPPED.budget = int(params["mapped_bytes"])
        self.archives = OrderedDict()  # path -> Archive, least recently used first

    def archive(self, name):
        """The archive at ``name`` (relative to the root, or absolute inside it): its catalog read
        once and again when it changes; segments are mapped within the process's byte budget."""
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            raise RequestError(f"archive: {name!r} is outside the archive root {self.root}")
        try:
            generation = archive_io.generation(path)
            cached = self.archives.get(path)
            if cached is None or cached.generation != generation:
                cached = self.archives[path] = archive_io.open_archive(path)
        except archive_io.ArchiveError as err:
            raise RequestError(f"archive: {err}") from None
        self.archives.move_to_end(path)
        while len(self.archives) > self.max_open:
            self.archives.popitem(last=False)
        return cached

    def parse(self, request):
        # A path's bytes as the file system takes them (the client sends os.fsencode's): the stub's
        # embedded Python may run with an ASCII file-system encoding, whatever the locale.
        archive = self.archive(input_scalar(request, "archive", None, _path_name, decode=False))
        query = poses_input(request, "query")
        k = input_scalar(request, "k", 10, int)
        if not 1 <= k <= self.max_k:
            raise RequestError(f"k: expected 1 <= k <= {self.max_k}, got {k}")
        fps = input_scalar(request, "fps", 0.0, float) or None
        min_gap = input_scalar(request, "min_gap", MOMENT_GAP_S, float)
        start = input_scalar(request, "start", math.nan, float)
        end = input_scalar(request, "end", math.nan, float)
        video = input_scalar(request, "video", "", str) or None
        min_score = input_scalar(request, "min_score", CLIP_MIN_SCORE, float)
        for label, value in (("fps", fps or 1.0), ("min_gap", min_gap)):
            if not (math.isfinite(value) and value >= 0):
                raise RequestError(f"{label}: expected a finite value >= 0, got {value}")
        if not 0 <= min_score <= 100:
            raise RequestError(f"min_score: expected a score from 0 to 100, got {min_score}")
        where = SearchFilter(video=video, start=None if math.isnan(start) else start,
                             end=None if math.isnan(end) else end)
        if len(query) > 1:
            try:
                check_clip_cost(archive, len(query), where, self.max_clip_cells)
            except ValueError as err:
                raise RequestError(str(err)) from None
        return archive, query, k, fps, min_gap, where, min_score

    def compute(self, items):
        outputs = []
        for archive, query, k, fps, min_gap, where, min_score in items:
            try:
                hits = search_archive(archive, query, k, query_fps=fps, min_gap=min_gap, where=where,
                                      min_score=min_score)
            except archive_io.ArchiveError as err:
                raise RequestError(str(err)) from None
            text = lambda key: np.array([(h[key] or "").encode() for h in hits], np.object_)  # noqa: E731
            column = lambda key, dtype: np.array([h[key] for h in hits], dtype)  # noqa: E731
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
            ])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)


def _path_name(value) -> str:
    """An archive name from the request (bytes, or text) as a path string of this process."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)
