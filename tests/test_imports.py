"""What importing costs and what names mean: a client starts without numba, and the kernels'
public functions keep their names whatever submodule was imported first."""

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_client_starts_without_numba():
    assert _run("import sys, clients, kernels.scoring, kernels.skeleton; print('numba' in sys.modules)") == "False"


def test_kernel_functions_keep_their_names_after_their_submodule_is_imported():
    code = ("import kernels.normalize, kernels.dtw\nimport kernels\nfrom kernels.dtw import dtw_path\n"
            "from engine import people, render\n"
            "print(callable(kernels.normalize), callable(kernels.dtw), kernels.dtw.__module__)")
    assert _run(code) == "True True kernels.dtw"


def test_engine_does_not_import_the_load_tests():
    code = ("import sys, engine.cli, engine.jobs, engine.services\n"
            "print(sorted(m for m in sys.modules if m.startswith('loadtests')))")
    assert _run(code) == "[]"
