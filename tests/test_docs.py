"""The documentation builds without a warning, and its runnable examples run.

A code block of the documentation (or the README) that is a complete
program is fenced as ``python`` and starts with the line ``# runnable``;
each one runs here, as its own process, against a private loopback bus
that it reads from ``$IVYBUS``, and must end by itself with exit code 0.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trivy
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


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """The HTML build of the documentation (made once): its process and output."""
    pytest.importorskip("sphinx")
    output = tmp_path_factory.mktemp("html")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]
    result = subprocess.run(
        [*command, str(DOCS), str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, output


@pytest.fixture
def site(build: tuple[subprocess.CompletedProcess, Path]) -> Path:
    """The built site, when the build succeeded."""
    result, output = build
    if result.returncode != 0:
        pytest.fail("the documentation does not build")
    return output


def test_docs_build_without_warnings(build: tuple[subprocess.CompletedProcess, Path]) -> None:
    result, _ = build
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def _example_files() -> list[str]:
    """Every file of examples/, as a path from the repository's root."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "examples").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def test_examples_page_lists_every_example(site: Path) -> None:
    files = _example_files()
    assert "examples/hello_agent.py" in files
    page = (DOCS / "examples.md").read_text(encoding="utf-8")
    built = (site / "examples.html").read_text(encoding="utf-8")
    for name in files:
        assert name in page, name
        assert name in built, name
    for script in (name for name in files if name.endswith(".py")):
        # a program (not a test, nor a module the programs import) shows how to run it
        if "__main__" in (ROOT / script).read_text(encoding="utf-8"):
            assert f"python {script}" in page, script
    assert 'href="examples.html"' in (site / "index.html").read_text(encoding="utf-8")


def _bare_command() -> re.Pattern[str]:
    """``trivy COMMAND`` or ``trivy -OPTION`` not run as ``python -m trivy``."""
    from trivy._cli import build_parser

    commands = next(
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return re.compile(rf"(?<!-m )\btrivy (?:(?:{'|'.join(commands)})\b|-)")


def test_command_lines_say_python_m_trivy() -> None:
    """``trivy`` alone may run an unrelated container scanner."""
    bare = _bare_command()
    assert bare.search('press a button: ``trivy send "BTN 1f"``')
    assert not bare.search("python -m trivy send 'BTN 1f'")
    files = [*DOCS.rglob("*.md"), *(ROOT / "examples").rglob("*.py"), ROOT / "SECURITY.md"]
    found = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
        if bare.search(line)
    ]
    assert not found, found


def test_cli_help_blocks_say_what_to_run() -> None:
    """Read raw, each ``{clihelp}`` block shows the line that prints its help."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```\{clihelp\} *([^\n]*)\n(.*?)^```", text, re.M | re.S)
    assert len(blocks) >= 10
    for command, content in blocks:
        if command == ".help":
            wanted = "> .help"
        else:
            wanted = (
                f"$ python -m trivy {command} --help" if command else "$ python -m trivy --help"
            )
        assert content.strip() == wanted, command


def test_api_page_describes_every_option_of_open_ivy_bus(site: Path) -> None:
    from trivy._options import OPTION_NAMES

    page = (site / "api" / "trivy.html").read_text(encoding="utf-8")
    start = page.index('id="trivy.open_ivy_bus"')
    function = page[start : page.index('id="trivy.BusOptions"', start)]
    for name in sorted(OPTION_NAMES):
        assert f'href="#trivy.BusOptions.{name}"' in function, name
        assert f'id="trivy.BusOptions.{name}"' in page, name


def test_recording_sample_wraps_on_the_page(site: Path) -> None:
    page = (site / "howto" / "record-replay.html").read_text(encoding="utf-8")
    block = page.rindex('<div class="highlight-', 0, page.index("trivy_recording"))
    assert page.startswith('<div class="highlight-json', block)  # wrapped by trivy.css
    assert "_static/trivy.css" in page
    css = (site / "_static" / "trivy.css").read_text(encoding="utf-8")
    assert re.search(r"div\.highlight-json pre \{[^}]*white-space: pre-wrap", css)


def test_security_policy_names_a_private_way_to_report() -> None:
    policy = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    assert "Report a vulnerability" in policy
    assert "/security/advisories/new" in policy


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


def test_the_changelog_names_the_package_version() -> None:
    """It had only "Unreleased" while the version was 0.1.0."""
    text = (ROOT / "CHANGELOG.md").read_text()
    first = next(line for line in text.splitlines() if line.startswith("## "))
    assert first.startswith(f"## {trivy.__version__} "), first
