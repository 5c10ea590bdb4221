"""DTW of two movements -> distance, 0-100 score, part scores along the path, the path on request."""

import numpy as np

import kernels
from engine.triton_models import RequestError, input_scalar, instance_xp, normalized, output_tensor, poses_input, serve_batch


class TritonPythonModel:
    def initialize(self, args):
        self.xp = instance_xp(args)

    def parse(self, request):
        reference = poses_input(request, "reference", self.xp)
        attempt = poses_input(request, "attempt", self.xp)
        window = input_scalar(request, "window", None, int)
        if window is not None and window < 1:
            window = None  # 0 or negative: no window
        mirror = input_scalar(request, "mirror", False, bool)
        with_path = input_scalar(request, "return_path", False, bool)
        ref = normalized(reference, "reference")
        att = normalized(attempt, "attempt")
        atts = (att, kernels.mirror_vectors(*att)) if mirror else (att,)
        return ref, atts, window, mirror, with_path

    def compute(self, items):
        xp = self.xp
        # Every (reference, attempt or mirrored attempt) pair of the batch goes through one ragged
        # batched DTW call per distinct window.
        pairs = [(n, flipped) for n, item in enumerate(items) for flipped in range(len(item[1]))]
        scores = {}
        for window in {item[2] for item in items}:
            group = [(n, f) for n, f in pairs if items[n][2] == window]
            refs = [items[n][0][0] for n, _ in group]
            atts = [items[n][1][f][0] for n, f in group]
            batch = kernels.dtw_score(_pad(refs, xp), _pad(atts, xp), window=window,
                                      lengths_a=np.array([len(r) for r in refs]),
                                      lengths_b=np.array([len(a) for a in atts]))
            scores.update(zip(group, (float(s) for s in batch)))
        outputs = []
        for n, ((ref_v, ref_w), atts, window, _, with_path) in enumerate(items):
            flipped = max(range(len(atts)), key=lambda f: scores[(n, f)])
            score = scores[(n, flipped)]
            att_v, att_w = atts[flipped]
            try:
                path, distance = kernels.dtw_path(ref_v, att_v, window=window)
            except ValueError as err:
                raise RequestError(str(err)) from None
            _, parts, _ = kernels.aligned_part_scores(ref_v, ref_w, att_v, att_w, path)
            path_out = path.astype(xp.int32) if with_path else xp.zeros((0, 2), xp.int32)
            outputs.append([
                output_tensor("distance", xp.asarray([distance], xp.float32)),
                output_tensor("score", xp.asarray([score], xp.float32)),
                output_tensor("part_scores", parts.astype(xp.float32)),
                output_tensor("mirrored", xp.asarray([bool(flipped)])),
                output_tensor("path", path_out),
            ])
        return outputs

    def execute(self, requests):
        return serve_batch(requests, self.parse, self.compute)


def _pad(sequences, xp):
    """Stack ``[T_i, D]`` sequences into ``[B, max T_i, D]`` (zeros after each end)."""
    out = xp.zeros((len(sequences), max(len(s) for s in sequences), sequences[0].shape[1]), xp.float32)
    for i, seq in enumerate(sequences):
        out[i, :len(seq)] = seq
    return out
