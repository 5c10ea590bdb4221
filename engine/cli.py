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


def _models_export(args) -> int:
    """Export the pose model to ONNX unless it is current; print where it is."""
    from .export import ExportError, export_pose_model, is_current, onnx_path

    try:
        current = not args.force and is_current(args.model_repository)
        path = onnx_path(args.model_repository) if current else export_pose_model(
            args.model_repository, force=args.force)
    except ExportError as err:
        print(f"posescore: {err}", file=sys.stderr)
        return 1
    print(f"{path} ({'up to date' if current else 'exported'})")
    return 0


def _serve(args) -> int:
    """Run the embedded Triton server in the foreground until interrupted."""
    import signal

    from .server import ServerError, TritonServer

    server = TritonServer(args.model_repository, grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, archive_root=args.archive_root,
                          log_verbose=args.log_verbose)
    # SIGTERM ends the foreground server like Ctrl-C does, through the same clean stop.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        server.start()
        print(f"gRPC     {server.grpc_url}\nHTTP     {server.http_url}\nmetrics  {server.metrics_url}"
              f"\nlog      {server.log_path}", flush=True)
        while server.is_running():
            server.process.wait()
        print(f"posescore: tritonserver exited with code {server.process.returncode if server.process else '?'}",
              file=sys.stderr)
        return 1
    except ServerError as err:
        print(f"posescore: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posescore", description="Score human movement.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions and available compute backends")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_info)

    from .server import DEFAULT_MODEL_REPOSITORY

    models = sub.add_parser("models", help="manage the model repository")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    export = models_sub.add_parser("export", help="export the pose model to ONNX (skipped when current)")
    export.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    export.add_argument("--force", action="store_true", help="export even when the file is current")
    export.set_defaults(func=_models_export)

    serve = sub.add_parser("serve", help="run the embedded Triton server in the foreground")
    serve.add_argument("--model-repository", default=str(DEFAULT_MODEL_REPOSITORY))
    serve.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    serve.add_argument("--http-port", type=int, default=None, help="default: a free port")
    serve.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    serve.add_argument("--archive-root", default=None,
                       help="folder under which the search model may load archives (default: .)")
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
