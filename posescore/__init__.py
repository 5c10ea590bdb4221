"""posescore: score human movement. One import name; its subpackages are ``posescore.kernels``
(pure array math), ``posescore.clients`` (gRPC clients), ``posescore.engine`` (everything with I/O)
and ``posescore.loadtests``; ``posescore.cli`` is the command line (docs/ARCHITECTURE.md)."""

from pathlib import Path as _Path

# Installed, the subpackages sit in this folder (pyproject.toml maps them in). In a source checkout
# that is not installed (a GPU machine's copy of the tree, run with the checkout on sys.path) they
# are the checkout's top-level folders beside this one.
_HERE = _Path(__file__).resolve().parent
if not (_HERE / "kernels").is_dir() and (_HERE.parent / "kernels" / "__init__.py").is_file():
    __path__.append(str(_HERE.parent))  # noqa: F821 - a package's own __path__
