"""The sorted insertion both top-k scans share: one definition, compiled for each target
(numba for the CPU selection in kernels.search, numba-CUDA for the fused kernel)."""


def insert_sorted(keys, idx, k, value, index):
    """Insert ``value`` (with ``index``) into ``keys[:k]``, sorted descending, whose last entry it
    beats; the last entry drops out. Returns the new worst key ``keys[k - 1]``."""
    pos = k - 1
    while pos > 0 and keys[pos - 1] < value:
        keys[pos] = keys[pos - 1]
        idx[pos] = idx[pos - 1]
        pos -= 1
    keys[pos] = value
    idx[pos] = index
    return keys[k - 1]
