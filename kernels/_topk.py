"""The top-k order and the sorted insertion both top-k scans share: one definition, compiled for
each target (numba for the CPU selection in kernels.search, numba-CUDA for the fused kernel)."""


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


def better(key_a, idx_a, key_b, idx_b):
    """Whether entry a comes before entry b in a top-k: a larger key, of equal keys the lower
    index; an empty place (index -1) comes after every entry."""
    if idx_a < 0:
        return False
    if idx_b < 0:
        return True
    return key_a > key_b or (key_a == key_b and idx_a < idx_b)
