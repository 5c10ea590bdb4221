"""Pose / movement search in an archive loaded once and kept resident (engine.archive)."""

import os
from pathlib import Path

import numpy as np

from engine.archive import ARCHIVE_ROOT_ENV, ArchiveError, load_archive, search_archive
from engine.triton_models import RequestError, input_scalar, output_tensor, parameters, poses_input, serve_batch


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        root = params.get("archive_root") or os.environ.get(ARCHIVE_ROOT_ENV) or os.getcwd()
        self.root = Path(root).resolve()
        self.max_k = int(params.get("max_k", 1000))
        self.archives = {}

    def archive(self, name):
        """The archive at ``name`` (relative to the root, or absolute inside it), loaded once and
        reloaded when its manifest changes."""
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            raise RequestError(f"archive: {name!r} is outside the archive root {self.root}")
        manifest = path / "manifest.json"
        if not manifest.exists():
            raise RequestError(f"archive: {name!r} is not a posescore archive (no manifest.json)")
        cached = self.archives.get(path)
        if cached is None or cached.mtime != manifest.stat().st_mtime:
            try:
                cached = self.archives[path] = load_archive(path)
            except ArchiveError as err:
                raise RequestError(f"archive: {err}") from None
        return cached

    def parse(self, request):
        # A path's bytes as the file system takes them (the client sends os.fsencode's): the stub's
        # embedded Python may run with an ASCII file-system encoding, whatever the locale.
        archive = self.archive(input_scalar(request, "archive", None, _path_name, decode=False))
        query = poses_input(request, "query")
        k = input_scalar(request, "k", 10, int)
        if not 1 <= k <= self.max_k:
            raise RequestError(f"k: expected 1 <= k <= {self.max_k}, got {k}")
        return archive, query, k

    def compute(self, items):
        outputs = []
        for archive, query, k in items:
            try:
                matches = search_archive(archive, query, k)
            except ArchiveError as err:
                raise RequestError(str(err)) from None
            videos = [archive.videos[m["video"]] for m in matches]
            column = lambda key, dtype: np.array([m[key] for m in matches], dtype)  # noqa: E731
            outputs.append([
                output_tensor("video_ids", np.array([v["id"].encode() for v in videos], np.object_)),
                output_tensor("video_names", np.array([v["name"].encode() for v in videos], np.object_)),
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
