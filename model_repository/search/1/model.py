"""Pose / movement search in archives opened under the archive root (engine.archive, engine.archive.search).

A request searches the whole archive, or one shard of it (``shard`` "I/N": the segments whose id
is I modulo N; the server's ``archive_shard`` when the request names none). ``phase`` selects
what a shard answers for a merge over several servers (engine.archive.sharded): "" the hits,
"pose_candidates" its ``count`` best poses by inner product, "clip_candidates" its ``count`` best
DTW matches, "clip_score" the hits of the DTW ``candidates`` sent back to it.
"""

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from posescore.engine.archive import store as archive_io
from posescore.engine.archive import search as search_io
from posescore.engine.archive.search import (CLIP_MIN_SCORE, MAX_CLIP_CELLS, MOMENT_GAP_S, ClipCandidate, SearchFilter,
                           check_clip_cost)
from posescore.engine.serving.plumbing import (RequestError, input_array, input_scalar, output_tensor, parameters, poses_input,
                                  serve_batch)

PHASES = ("", "pose_candidates", "clip_candidates", "clip_score")
#: Most candidates one phase request may ask for (pose_candidates, clip_candidates).
MAX_COUNT = 4_000_000


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        root = params.get("archive_root") or os.environ.get(archive_io.ARCHIVE_ROOT_ENV) or os.getcwd()
        self.root = Path(root).resolve()
        self.max_k = int(params.get("max_k", 10000))
        self.max_open = int(params.get("max_open_archives", 16))
        self.max_clip_cells = int(params.get("max_clip_cells") or MAX_CLIP_CELLS)
        self.shard = archive_io.parse_shard(params.get("archive_shard") or os.environ.get(archive_io.ARCHIVE_SHARD_ENV))
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

    def shard_of(self, text):
        """The shard a request searches: its own, which must be this server's where one is set."""
        try:
            asked = archive_io.parse_shard(text) if text else self.shard
        except archive_io.ArchiveError as err:
            raise RequestError(str(err)) from None
        if self.shard is not None and asked != self.shard:
            raise RequestError(f"shard: this server holds shard {_shard_text(self.shard)} of its archives, "
                               f"asked for {_shard_text(asked)}")
        return asked

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
        phase = input_scalar(request, "phase", "", str)
        if phase not in PHASES:
            raise RequestError(f"phase: expected one of {PHASES}, got {phase!r}")
        shard = self.shard_of(input_scalar(request, "shard", "", str))
        count = input_scalar(request, "count", 0, int)
        if phase in ("pose_candidates", "clip_candidates") and not 1 <= count <= MAX_COUNT:
            raise RequestError(f"count: expected 1 <= count <= {MAX_COUNT:,} for phase {phase!r}, got {count}")
        candidates = []
        if phase == "clip_score":
            rows = input_array(request, "candidates")
            costs = input_array(request, "candidate_costs")
            if rows.ndim != 2 or rows.shape[1] != 3 or costs.shape != (rows.shape[0],):
                raise RequestError(f"candidates [C, 3] (segment, first row, last row) and candidate_costs [C]: "
                                   f"got {list(rows.shape)} and {list(costs.shape)}")
            candidates = [ClipCandidate(float(c), int(s), int(a), int(b)) for (s, a, b), c in zip(rows, costs)]
        if phase in ("pose_candidates",) and len(query) != 1:
            raise RequestError(f"query: phase {phase!r} takes one pose [1, 17, 3], got {len(query)}")
        if phase in ("clip_candidates", "clip_score") and len(query) < 2:
            raise RequestError(f"query: phase {phase!r} takes a movement [M >= 2, 17, 3], got {len(query)} pose")
        where = SearchFilter(video=video, start=None if math.isnan(start) else start,
                             end=None if math.isnan(end) else end)
        if len(query) > 1 and phase in ("", "clip_candidates"):
            try:
                check_clip_cost(archive, len(query), where, self.max_clip_cells, shard)
            except ValueError as err:
                raise RequestError(str(err)) from None
        return dict(archive=archive, query=query, k=k, fps=fps, min_gap=min_gap, where=where, min_score=min_score,
                    phase=phase, shard=shard, count=count, candidates=candidates)

    def answer(self, q):
        """A request's hits (dicts of engine.archive.search, merge fields included) and poses searched."""
        archive, query, where = q["archive"], q["query"], q["where"]
        if q["phase"] == "pose_candidates":
            return search_io.pose_candidates(archive, search_io.check_query(query)[0], q["count"], where=where,
                                             shard=q["shard"])
        if q["phase"] == "clip_candidates":
            found = search_io.clip_candidates(archive, search_io.check_query(query), q["count"], where=where,
                                              max_cost=search_io.clip_max_cost(q["min_score"], len(query)),
                                              shard=q["shard"])
            return [dict(search_io.candidate_hit(archive, c), key=c.cost) for c in found], None
        if q["phase"] == "clip_score":
            return search_io.clip_hits(archive, search_io.check_query(query), q["candidates"], q["k"],
                                       query_fps=q["fps"], where=where, min_score=q["min_score"],
                                       shard=q["shard"]), None
        query = search_io.check_query(query)
        if len(query) == 1:
            return search_io.search_poses(archive, query[0], q["k"], min_gap=q["min_gap"], where=where,
                                          shard=q["shard"]), None
        return search_io.search_clip(archive, query, q["k"], query_fps=q["fps"], where=where,
                                     min_score=q["min_score"], shard=q["shard"]), None

    def compute(self, items):
        outputs = []
        for q in items:
            try:
                hits, searched = self.answer(q)
            except archive_io.ArchiveError as err:
                raise RequestError(str(err)) from None
            text = lambda key: np.array([(h[key] or "").encode() for h in hits], np.object_)  # noqa: E731
            column = lambda key, dtype, default=0: np.array([h.get(key, default) for h in hits], dtype)  # noqa: E731
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
                output_tensor("searched", np.array([-1 if searched is None else searched], np.int64)),
                output_tensor("searched_shard", np.array([_shard_text(q["shard"]).encode()], np.object_)),
                output_tensor("generation", np.array([q["archive"].generation], np.int64)),
            ])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)


def _shard_text(shard) -> str:
    return "" if shard is None else f"{shard[0]}/{shard[1]}"


def _path_name(value) -> str:
    """An archive name from the request (bytes, or text) as a path string of this process."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)
