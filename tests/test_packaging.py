"""The distribution: one import name. A wheel built from this checkout installs ``posescore`` and
nothing else at the top level, and the installed package works from anywhere."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: What the distribution is built from (a copy: setuptools writes build/ beside the sources).
SOURCES = ("pyproject.toml", "README.md", "posescore", "kernels", "clients", "engine", "loadtests")


def test_the_wheel_installs_one_top_level_name_and_imports_from_its_own_files(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel, = (tmp_path / "dist").glob("posescore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"posescore"}
    for package in ("kernels", "clients", "engine", "loadtests", "engine/serving", "engine/archive",
                    "engine/jobs", "engine/media", "engine/analysis", "engine/reports", "engine/cli"):
        assert f"posescore/{package}/__init__.py" in names, package

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import posescore.kernels as k, posescore.engine.cli.parser, posescore.cli, posescore.loadtests.cli\n"
            "import numpy as np\n"
            "v, w = k.normalize(np.random.default_rng(0).uniform(1, 100, (4, 17, 3)).astype(np.float32))\n"
            "print(k.__file__); print(posescore.cli.__file__); print(v.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin",
                              "NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    assert out.returncode == 0, out.stderr
    kernels_file, cli_file, shape = out.stdout.splitlines()
    assert Path(kernels_file).is_relative_to(target) and Path(cli_file).is_relative_to(target)
    assert shape == "(4, 34)"


def test_a_source_checkout_imports_its_own_folders_without_an_install(tmp_path):
    """A copy of the tree on sys.path (as the GPU check runs it, nothing installed): the
    subpackages are the checkout's top-level folders."""
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES[2:]:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import posescore.kernels.skeleton as s, posescore.engine.archive.shard as a\n"
            "print(s.__file__); print(a.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=source,
                         env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(source / "kernels" / "skeleton.py"),
                                  str(source / "engine" / "archive" / "shard.py")]
