"""What importing costs and what names mean: a client starts without numba, the kernels' public
functions are the package's names, and imports run one way between the engine's rooms."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_client_starts_without_numba():
    code = ("import sys, posescore.clients, posescore.kernels.skeleton\n"
            "from posescore.kernels import METRICS, SCORE_SCALES\n"
            "print('numba' in sys.modules)")
    assert _run(code) == "False"


def test_kernel_functions_are_the_packages_names():
    code = ("from posescore import kernels\nfrom posescore.kernels import dtw, normalize\n"
            "from posescore.engine.analysis import people\nfrom posescore.engine.reports import render\n"
            "print(callable(kernels.normalize), callable(kernels.dtw), dtw.__module__)")
    assert _run(code) == "True True posescore.kernels._dtw"


def test_engine_does_not_import_the_load_tests():
    code = ("import sys, posescore.engine.cli.commands, posescore.engine.jobs.compare, posescore.engine.analysis.answers\n"
            "print(sorted(m for m in sys.modules if m.startswith('posescore.loadtests')))")
    assert _run(code) == "[]"
