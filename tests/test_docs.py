"""The documentation builds without a warning, and its runnable examples run.

A code block of the documentation (or the README) that is a complete
program is fenced as ``python`` and starts with the line ``# runnable``;
each one runs here, as its own process, against a private loopback bus
that it reads from ``$IVYBUS``, and must end by itself with exit code 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trivy.testing import free_bus_address

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Seconds a runnable example may take (each ends within a few).
EXAMPLE_TIMEOUT = 30
#: A fenced ``python`` block whose first line is ``# runnable``.
RUNNABLE = re.compile(r"^```python\n(# runnable\n.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _runnable_blocks() -> list[tuple[str, int, str]]:
    """(file, index of the block in that file, code) for every runnable block."""
    files = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
    blocks = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for index, code in enumerate(RUNNABLE.findall(text)):
            blocks.append((str(path.relative_to(ROOT)), index, code))
    return blocks


BLOCKS = _runnable_blocks()


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]
    result = subprocess.run(
        [*command, str(DOCS), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def test_docs_have_runnable_examples() -> None:
    assert len(BLOCKS) >= 10, [(path, index) for path, index, _ in BLOCKS]


#: Every fenced ``python`` block.
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: The first line of a complete program that runs until it is stopped (an
#: agent): it cannot end by itself, so it is compiled, not run.
RUNS_UNTIL_STOPPED = "# runs until stopped"


def test_every_complete_program_is_run_or_marked() -> None:
    """A block calling ``trio.run`` is runnable, or says why not (and compiles)."""
    for path in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        for code in PYTHON_BLOCK.findall(path.read_text(encoding="utf-8")):
            if "trio.run(" not in code:
                continue
            first = code.split("\n", 1)[0]
            assert first in ("# runnable", RUNS_UNTIL_STOPPED), (path.name, first)
            compile(code, str(path), "exec")


@pytest.mark.parametrize(
    "code", [code for _, _, code in BLOCKS], ids=[f"{path}[{index}]" for path, index, _ in BLOCKS]
)
def test_runnable_example(code: str) -> None:
    env = {**os.environ, "IVYBUS": free_bus_address()}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
    )
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stderr[-5000:]}"
