"""The README's examples run as written.

Python (```python blocks): each block is run whole by the venv's python in a subprocess whose working
directory is a fresh temporary folder, and must exit 0. A block that reads ``POSESCORE_URL`` talks
to a server: it gets the gRPC address of the session's embedded server (``triton_server`` in
conftest.py) in ``POSESCORE_URL``, as a user points it at their ``posescore serve``, and runs in a
fresh folder under that server's archive root (the block writes an archive in its working directory
and names it for ``search``, which answers only for archives under the root). The other blocks run
with ``POSESCORE_URL`` removed. No block may import the old top-level packages (``kernels``,
``clients``, ``engine``, ``loadtests``): the import name is ``posescore``.

Shell (```bash, ```sh and ```console blocks; in console blocks only the lines starting with ``$ ``
are commands, the rest is output): one test per command line, the lines of a block run in order in
one temporary folder (a later line may read what an earlier one wrote). Every ``posescore`` line is
first parsed by posescore's own argument parser, so a command or option the CLI lacks fails even on
a line that is not run. Then, by these rules (SKIP_RULES below, first match wins), a line is
skipped with its reason (``pytest.skip``: listed by ``-ra`` as skipped, never silently):

- not a ``posescore`` command: ``make`` targets (they install packages and run the whole suite or
  the demo, minutes each) and any other program;
- ``posescore serve``: a server in the foreground, until Ctrl-C;
- ``posescore models export``: writes ``model_repository/`` and needs the export toolchain (torch,
  ultralytics), which the test environment need not have;
- ``posescore loadtest``: locust for ``--duration`` (60 s by default) against a deployment;
- ``posescore probe``: names a server of its own (``--url``), which the README's reader runs;
- any command with a video among its arguments (``.avi``, ``.mp4``, ...): the pose model over a
  whole video, a long job on a CPU (``find`` on ``vtest.avi``: ~800 frames).

Every other line is run (``--help``, ``info``, ``pose`` on an image, ...) with the venv's
``posescore`` and must exit 0. A job command (one with a ``--url`` option) that names no server is
given ``--url`` of the session's server: the same job, answered by the running server instead of
an embedded one started for that line alone.

Also, every dotted name ``posescore.x.y`` the README quotes in backticks must exist.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
POSESCORE = str(VENV_BIN / "posescore") if (VENV_BIN / "posescore").exists() else None
#: A block that reads this variable needs a server (its gRPC HOST:PORT).
SERVER_VARIABLE = "POSESCORE_URL"
#: Old top-level packages, now posescore.kernels, posescore.clients, ...
OLD_PACKAGES = ("kernels", "clients", "engine", "loadtests")
VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
PYTHON_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 300


# -- the README's blocks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    language: str
    line: int  # 1-based line of the opening fence
    code: str


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of the README, with its language and where it starts."""
    blocks, language, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if language is None:
            if fence:
                language, start, body = fence.group(1).lower(), number, []
        elif fence and not fence.group(1):
            blocks.append(Block(language, start, "\n".join(body) + "\n"))
            language = None
        else:
            body.append(line)
    assert language is None, f"README.md:{start}: a fenced block is never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [b for b in BLOCKS if b.language in ("python", "py")]


@dataclass(frozen=True)
class Command:
    block: int  # the shell block's line, which names the folder the block's lines share
    line: int
    text: str


def shell_commands(blocks: list[Block]) -> list[Command]:
    """The command lines of the bash / sh / console blocks (console: the ``$ `` lines), with a
    trailing backslash joining a line to the next."""
    commands = []
    for block in blocks:
        if block.language not in ("bash", "sh", "shell", "console"):
            continue
        pending, first = "", 0
        for offset, raw in enumerate(block.code.splitlines(), 1):
            line = raw.rstrip()
            if block.language == "console" and not pending:
                if not line.startswith("$ "):
                    continue  # the command's output
                line = line[2:]
            if not pending:
                first = block.line + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if text and not text.startswith("#"):
                commands.append(Command(block.line, first, text))
    return commands


COMMANDS = shell_commands(BLOCKS)


def words(command: str) -> list[str]:
    """The command's words, comments dropped, leading ``NAME=value`` assignments dropped."""
    argv = shlex.split(command, comments=True)
    while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
        argv.pop(0)
    return argv


def skip_reason(argv: list[str]) -> str | None:
    """Why a README command line is not run (the rules of this module's docstring), or None."""
    if not argv:
        return "no command on the line"
    if argv[0] == "make":
        return "make target: installs packages and runs the whole suite or the demo (minutes)"
    if argv[0] != "posescore":
        return f"not a posescore command ({argv[0]})"
    args = argv[1:]
    if "-h" in args or "--help" in args:
        return None  # help is cheap whatever the command
    if args[:1] == ["serve"]:
        return "posescore serve runs a server in the foreground until stopped"
    if args[:2] == ["models", "export"]:
        return "posescore models export writes model_repository/ and needs the export toolchain (torch, ultralytics)"
    if args[:1] == ["loadtest"]:
        return "posescore loadtest runs locust for --duration (60 s by default) against a deployment"
    if args[:1] == ["probe"]:
        return "posescore probe checks a server the reader runs, at the address the line names"
    videos = [a for a in args if Path(a).suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        return f"the pose model over a whole video ({', '.join(videos)}): a long job on a CPU"
    return None


def parse_cli(argv: list[str]):
    """``argv`` (without ``posescore``) parsed by posescore's own parser: the namespace, or None
    for ``--help`` (which exits 0). A parse error fails the test with the parser's message."""
    from posescore.cli import build_parser

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"posescore {shlex.join(argv)}: {err.getvalue().strip()}"
        return None


# -- tests -------------------------------------------------------------------------------------------
def test_the_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 2, "README.md: the client and kernel examples are gone"
    assert any(SERVER_VARIABLE in b.code for b in PYTHON_BLOCKS), "no Python example talks to a server"
    assert any(words(c.text)[:1] == ["posescore"] for c in COMMANDS), "no posescore command in README.md"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"python-line-{b.line}" for b in PYTHON_BLOCKS])
def test_python_example_runs(block, request, tmp_path):
    old = re.findall(rf"^\s*(?:from|import)\s+((?:{'|'.join(OLD_PACKAGES)})\b[\w.]*)", block.code, re.MULTILINE)
    assert not old, f"README.md:{block.line}: imports {old}; the import name is posescore ({'posescore.' + old[0]})"
    env = {k: v for k, v in os.environ.items() if k != SERVER_VARIABLE}
    cwd = tmp_path
    if SERVER_VARIABLE in block.code:
        server = request.getfixturevalue("triton_server")
        env[SERVER_VARIABLE] = server.grpc_url
        # under the server's archive root, where its search model may open the block's archive
        cwd = Path(server.archive_root) / f"readme-line-{block.line}"
        cwd.mkdir(parents=True, exist_ok=True)
    script = cwd / "example.py"
    script.write_text(block.code, encoding="utf-8")
    done = subprocess.run([PYTHON, script.name], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=PYTHON_TIMEOUT_S)
    assert done.returncode == 0, (f"README.md:{block.line}: the example exited {done.returncode}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-6000:]}")


@pytest.fixture(scope="module")
def block_folders(tmp_path_factory):
    """One folder per shell block, shared by its lines (run in README order)."""
    folders: dict[int, Path] = {}

    def folder(block_line: int) -> Path:
        if block_line not in folders:
            folders[block_line] = tmp_path_factory.mktemp(f"readme-shell-{block_line}")
        return folders[block_line]

    return folder


@pytest.mark.parametrize("command", COMMANDS, ids=[f"line-{c.line}" for c in COMMANDS])
def test_shell_example(command, request, block_folders):
    argv = words(command.text)
    namespace = parse_cli(argv[1:]) if argv[:1] == ["posescore"] else None
    reason = skip_reason(argv)
    if reason:
        pytest.skip(f"README.md:{command.line} `{shlex.join(argv)}`: {reason}")
    assert POSESCORE is not None, f"{VENV_BIN}/posescore is missing: install the package (make test)"
    run = [POSESCORE, *argv[1:]]
    if namespace is not None and getattr(namespace, "url", "no --url option") is None:
        run += ["--url", request.getfixturevalue("triton_server").grpc_url]
    env = {k: v for k, v in os.environ.items() if k != SERVER_VARIABLE}
    done = subprocess.run(run, cwd=block_folders(command.block), env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, (f"README.md:{command.line}: `{command.text}` exited {done.returncode}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


DOTTED = sorted(set(re.findall(r"`(posescore(?:\.[A-Za-z_]\w*)+)", README.read_text(encoding="utf-8"))))


@pytest.mark.parametrize("name", DOTTED)
def test_quoted_python_names_exist(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name and not ".".join(parts[:cut]).startswith(err.name):
                raise  # a module that exists failed to import one of its own dependencies
            continue
        for attribute in parts[cut:]:
            assert hasattr(value, attribute), f"README.md quotes `{name}`: {value.__name__} has no {attribute!r}"
            value = getattr(value, attribute)
        return
    pytest.fail(f"README.md quotes `{name}`: no such module")
