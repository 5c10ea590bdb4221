"""The ``posescore`` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args) -> int:
    """Print the versions and the backends the kernels can use on this machine."""
    import numba
    import numpy as np

    from kernels._backend import cupy_or_none

    cp = cupy_or_none()
    gpu = None
    if cp is not None:
        try:
            gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        except Exception:  # noqa: BLE001 - CuPy present but no usable device
            gpu = None
    info = {
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "cupy": getattr(cp, "__version__", None),
        "gpu": gpu,
        "backend": "GPU (CuPy arrays) and CPU (NumPy arrays)" if gpu else "CPU (NumPy + numba)",
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:14} {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posescore", description="Score human movement.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions and available compute backends")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
