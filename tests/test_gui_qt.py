"""The Qt example's tests (``tests/gui_qt_cases.py``), in a process of their own.

A QApplication is one per process, and Qt may crash a process whose Qt
objects outlive their application or whose display goes away: the cases
run in a pytest of their own, and this test reports their outcome (and
their latency figures, with ``-s``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parent / "gui_qt_cases.py"
#: Seconds the cases may take in all (each bounds its own waits).
TIMEOUT = 180


def test_qt_window_cases_under_load_and_on_close() -> None:
    pytest.importorskip("PySide6.QtWidgets")
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    command += ["-o", "python_files=gui_qt_cases.py", "-o", "addopts=-rs", str(CASES)]
    result = subprocess.run(
        command, cwd=CASES.parent.parent, capture_output=True, text=True, timeout=TIMEOUT
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    if " skipped" in result.stdout and " passed" not in result.stdout:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    assert "2 passed" in result.stdout, result.stdout[-3000:]
