"""The embedded Triton Inference Server: the real ``tritonserver`` binary from the nvidia-pytriton wheel.

``TritonServer`` starts it on loopback with our ``model_repository/``, free (or given) ports and the
python backend stub built for the running Python, waits until every model is ready, and stops it
with its whole process group (the python backend stubs included), removing the python backend's
shared memory even after a crash. The child also gets SIGTERM if this process dies, so an
interrupted parent leaves no orphan server behind.

    with TritonServer() as server:
        client = PoseScoreClient(server.grpc_url)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from posescore.engine.archive.shard import ARCHIVE_ROOT_ENV, ARCHIVE_SHARD_ENV, ArchiveError, parse_shard
from posescore.engine.serving.grpc_front import FRONT_METADATA, GrpcFront, refusals_metrics, request_bounds
from posescore.engine.serving.http_front import FRONT_HEADER, HttpFront
from posescore.engine.serving.metrics_front import MetricsFront

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
LOOPBACK = "127.0.0.1"
#: Triton's admin surfaces, closed to every client without the server's admin key: a client could
#: register the python backend's own shared memory and have Triton write into it, or change logging.
ADMIN_PROTOCOLS = "shared-memory,model-repository,trace,logging"
ADMIN_HEADER = "posescore-admin"
#: Every other API of Triton's own HTTP and gRPC endpoints (loopback ports any local user can reach)
#: answers only requests carrying the front's header with a key only the fronts hold.
FRONT_APIS = "health,metadata,inference,model-config,statistics"


# The python backend's shared-memory regions (one or more per model instance) live in /dev/shm; a
# server that stops normally removes them, one that crashes or is killed leaves them. Each server
# gets its own name prefix, so that stop() removes what it left.
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "posescore_triton_"


class ServerError(RuntimeError):
    """The server could not be started, or died; the message carries the tail of its log."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"the package {name!r} is not installed; run `make install`")
    return Path(list(spec.submodule_search_locations)[0])


def triton_distribution() -> Path:
    """Folder of the Triton server shipped in the nvidia-pytriton wheel (bin/, backends/, stubs)."""
    path = _package_dir("pytriton") / "tritonserver"
    if not (path / "bin" / "tritonserver").exists():
        raise ServerError(f"no tritonserver binary under {path}; reinstall nvidia-pytriton")
    return path


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the thread that forked it ends (see
    :data:`_LAUNCHER`, which lives as long as the process)."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _prepare_backends(runtime_dir: Path) -> Path:
    """A backend folder whose python backend uses the stub built for this Python version."""
    dist = triton_distribution()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version}")
    python_dir = runtime_dir / "backends" / "python"
    python_dir.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.name != "__pycache__":
            (python_dir / item.name).symlink_to(item)
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return runtime_dir / "backends"


def server_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its python stubs.

    The stub embeds libpython: the running interpreter's own library comes first on the library
    path, and its bin folder first on PATH so that the embedded interpreter finds this virtual
    environment's site-packages, where posescore (kernels, engine) is installed.
    """
    env = dict(os.environ)
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(_package_dir("pytriton").parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("YOLO_OFFLINE", "1")
    env.update(extra or {})
    return env


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: servers
# are forked from this one long-lived thread, so a server started from a short-lived worker thread
# is not killed when that thread returns, and still dies with the process.
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posescore-server-launcher")
_RUNNING: "weakref.WeakSet[TritonServer]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


def _accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


#: Seconds a stopping tritonserver waits for the requests in flight (``--exit-timeout-secs``).
EXIT_TIMEOUT_S = 5


class TritonServer:
    """A tritonserver process serving ``model_repository`` on loopback.

    Ports left as None are picked free. ``models`` limits loading to the named models (explicit
    model control); by default every model in the repository is loaded. ``archive_root`` is the
    folder under which the search model may load archives (default: the current directory);
    ``archive_shard`` ("I/N") the one shard of each archive its search model answers (default:
    any shard a request asks for, the whole archive when it asks for none).
    """

    def __init__(
        self,
        model_repository: str | Path = DEFAULT_MODEL_REPOSITORY,
        *,
        host: str = LOOPBACK,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        models: Sequence[str] | None = None,
        archive_root: str | Path | None = None,
        archive_shard: str | None = None,
        startup_timeout: float = 180.0,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        http: bool = False,
    ):
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} is not a folder")
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.models = list(models) if models is not None else None
        self.archive_root = Path(archive_root or os.getcwd()).resolve()
        try:
            shard = parse_shard(archive_shard)
        except ArchiveError as err:
            raise ServerError(f"archive_shard: {err}") from None
        self.archive_shard = None if shard is None else f"{shard[0]}/{shard[1]}"
        self.startup_timeout = startup_timeout
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.http = bool(http)
        # Triton's gRPC endpoint listens on a private port behind a front (engine.serving.grpc_front)
        # on grpc_port that bounds each model's requests: Triton 2.51 takes gRPC messages up to 2 GB.
        self._backend_grpc_port = free_port(host)
        self._grpc_front = None
        self.front_refused: Counter = Counter()  # kept across restarts, as the metrics are
        # With HTTP on, Triton's HTTP endpoint listens on a private port behind a validating front
        # (engine.serving.http_front) on http_port: one malformed JSON request can abort tritonserver 2.51.
        self._backend_http_port = free_port(host) if self.http else self.http_port
        self._front = None
        # Triton's metrics on a private port, behind a front that adds posescore's own from this
        # process (the supervisor's repairs): engine.serving.metrics_front.
        self._backend_metrics_port = free_port(host)
        self._metrics_front = None
        self.metrics_sources: list = [lambda: refusals_metrics(self.front_refused)]  # callables giving Prometheus text
        # The admin surfaces (shared-memory registration, repository control, trace, logging) answer
        # only requests carrying this header with this key, which only this object holds.
        self.admin_key = secrets.token_hex(16)
        # Triton's private endpoints answer client APIs only with this key, which the fronts add.
        self.front_key = secrets.token_hex(16)
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self._runtime_dir: Path | None = None
        self._shm_prefix: str | None = None

    # -- addresses --------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def model_names(self) -> list[str]:
        """The models this server loads: those asked for, else every model of its repository."""
        return list(self.models) if self.models is not None else repository_models(self.model_repository)

    @property
    def admin_headers(self) -> dict[str, str]:
        """The gRPC headers that open this server's admin surfaces (Triton prefixes the key's name)."""
        return {f"triton-grpc-protocol-{ADMIN_HEADER}": self.admin_key}

    @property
    def _front_headers(self) -> dict[str, str]:
        return {FRONT_METADATA: self.front_key}

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path | None:
        return self._runtime_dir / "tritonserver.log" if self._runtime_dir else None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log ('' before start)."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- life cycle -------------------------------------------------------------------------
    def command(self) -> list[str]:
        assert self._runtime_dir is not None
        cmd = [
            str(triton_distribution() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self._runtime_dir / 'backends'}",
            f"--cache-directory={triton_distribution() / 'caches'}",
            f"--grpc-address={self.host}", f"--grpc-port={self._backend_grpc_port}",
            f"--allow-http={'true' if self.http else 'false'}",
            f"--http-address={self.host}", f"--http-port={self._backend_http_port}",
            f"--grpc-restricted-protocol={ADMIN_PROTOCOLS}:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol={FRONT_APIS}:{FRONT_HEADER}={self.front_key}",
            f"--http-restricted-api={ADMIN_PROTOCOLS}:{ADMIN_HEADER}={self.admin_key}",
            *([f"--http-restricted-api={FRONT_APIS}:{FRONT_HEADER}={self.front_key}"] if self.http else []),
            f"--metrics-address={self.host}", f"--metrics-port={self._backend_metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            # Latency distributions beside the counters: p50/p90/p99 of each model's request,
            # queue and compute times (Triton 2.51 has summaries; histograms came later).
            "--metrics-config=summary_latencies=true",
            "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.99:0.001",
            "--exit-on-error=true", "--strict-readiness=true",
            # A stopping server waits this long for requests in flight. Triton's default, 30 s, was
            # what every stop took after a model's stub had died and been reloaded.
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        # Explicit model control, so that a model can be reloaded (by the admin key's holder).
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={name}" for name in self.model_names]
        return cmd + self.extra_args

    def start(self) -> "TritonServer":
        """Start the server and wait until it and every model is ready (raises ServerError)."""
        if self.process is not None:
            raise ServerError("server already started")
        self._check_ports()
        bounds = request_bounds(self.model_repository, self.model_names)
        remove_abandoned_runtimes()
        self._runtime_dir = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))
        (self._runtime_dir / OWNER_FILE).write_text(str(os.getpid()))
        # The runtime folder's name is unique among live servers: so is the prefix made from it.
        self._shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{self._runtime_dir.name.rsplit('-', 1)[-1]}_"
        _prepare_backends(self._runtime_dir)
        shard = {ARCHIVE_SHARD_ENV: self.archive_shard} if self.archive_shard else {}
        env = server_environment({ARCHIVE_ROOT_ENV: str(self.archive_root), **shard, **self.extra_env})
        with open(self.log_path, "wb") as log:
            self.process = _LAUNCHER.submit(
                subprocess.Popen, self.command(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=self._runtime_dir, start_new_session=True,
                preexec_fn=_die_with_parent,
            ).result()
        _RUNNING.add(self)
        try:
            self._wait_ready()
            self._grpc_front = GrpcFront(self.host, self.grpc_port, self._backend_grpc_port, key=self.front_key,
                                         bounds=bounds, refused=self.front_refused).start()
            self._metrics_front = MetricsFront(self.host, self.metrics_port, self._backend_metrics_port,
                                               self.metrics_sources).start()
            if self.http:
                self._front = HttpFront(self.host, self.http_port, self._backend_http_port,
                                        key=self.front_key, bounds=bounds).start()
        except BaseException as err:
            tail = self.log_tail()
            self.stop()
            raise ServerError(f"tritonserver did not become ready ({type(err).__name__}: {err}); its log ends "
                              f"with:\n{tail}") from None
        return self

    def _check_ports(self) -> None:
        """Raise ServerError naming the first of this server's ports that another process listens
        on: tritonserver would fail to bind it, while a client of that port would see the other
        server ready (gRPC's SO_REUSEPORT may even let both bind and split the connections)."""
        ports = [("gRPC", self.grpc_port), ("Triton's private gRPC", self._backend_grpc_port),
                 ("metrics", self.metrics_port),
                 ("Triton's private metrics", self._backend_metrics_port)]
        ports += [("HTTP", self.http_port)] if self.http else []
        ports += [("Triton's private HTTP", self._backend_http_port)] if self.http else []
        for what, port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket's TIME_WAIT is no owner
                try:
                    sock.bind((self.host, port))
                except OSError as err:
                    raise ServerError(f"the {what} port {self.host}:{port} is in use by another process "
                                      f"({err.strerror}); stop it or choose another port") from None

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + self.startup_timeout
        # Reconnect quickly: gRPC's default backoff would notice the ready server seconds late.
        # Triton's own endpoint, before the front opens: it answers this server's front key only.
        client = grpcclient.InferenceServerClient(f"{self.host}:{self._backend_grpc_port}", channel_args=[
            ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 200)])
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(f"tritonserver exited with code {self.process.returncode}")
                with contextlib.suppress(Exception):
                    # gRPC answers ready before Triton has started its HTTP service (a CI run's
                    # first HTTP request was refused): with HTTP on, wait for both.
                    if client.is_server_ready(headers=self._front_headers) and (
                            not self.http or _accepts(self.host, self._backend_http_port)):
                        # Ours, not another server that took the port meanwhile: only ours opens
                        # its admin surfaces to this key.
                        client.get_log_settings(headers={**self.admin_headers, **self._front_headers})
                        return
                time.sleep(0.2)
            raise ServerError(f"tritonserver not ready after {self.startup_timeout:.0f} s")
        finally:
            client.close()

    def stop(self, timeout: float = 3 * EXIT_TIMEOUT_S) -> None:
        """Stop the server and every process of its group; idempotent."""
        _RUNNING.discard(self)
        front, self._front = self._front, None
        if front is not None:
            front.stop()
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if process is not None:
            # The stubs are in the same group; make sure none outlives the server.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # The gRPC front once tritonserver has answered the calls in flight (their status reaches
        # their clients through it).
        grpc_front, self._grpc_front = self._grpc_front, None
        if grpc_front is not None:
            grpc_front.stop()
        # The metrics front last: the counters of requests finished while tritonserver stopped
        # stay readable until it has gone.
        metrics, self._metrics_front = self._metrics_front, None
        if metrics is not None:
            metrics.stop()
        if self._shm_prefix is not None:  # left behind when the server crashed or was killed
            for region in SHM_DIR.glob(self._shm_prefix + "*"):
                region.unlink(missing_ok=True)
            self._shm_prefix = None
        if self._runtime_dir is not None:
            keep = os.environ.get("POSESCORE_KEEP_SERVER_LOG")
            if keep:
                with contextlib.suppress(OSError):
                    shutil.copy2(self.log_path, keep)
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stub_pids(self, model: str) -> list[int]:
        """Process ids of ``model``'s python backend stubs (in the server's process group)."""
        if not self.is_running():
            return []
        out = subprocess.run(["ps", "-ww", "-eo", "pid=,pgid=,args="], capture_output=True, text=True).stdout
        pgid = os.getpgid(self.process.pid)
        rows = (line.split(None, 2) for line in out.splitlines())
        return [int(pid) for pid, group, args in (r for r in rows if len(r) == 3)
                if int(group) == pgid and "triton_python_backend_stub" in args and f"/{model}/" in args]

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


#: Each server's runtime folder (backends, log) in the temporary folder, and the file in it that
#: names the process that started it.
RUNTIME_PREFIX = "posescore-triton-"
OWNER_FILE = "owner.pid"


def remove_abandoned_runtimes() -> list[Path]:
    """Remove the runtime folders (and python-backend shared memory) of servers whose starting
    process is gone: a SIGKILLed ``posescore serve`` cannot clean up after itself, its next
    neighbour does. Returns the folders removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(RUNTIME_PREFIX + "*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge (an older layout, or being written)
        try:
            os.kill(owner, 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        for region in SHM_DIR.glob(f"{SHM_PREFIX}{owner}_{folder.name.rsplit('-', 1)[-1]}_*"):
            region.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def repository_models(repository: str | Path) -> list[str]:
    """The models of a Triton model repository: its folders holding a ``config.pbtxt``, sorted."""
    return sorted(p.parent.name for p in Path(repository).glob("*/config.pbtxt"))
