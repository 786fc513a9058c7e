"""Unmodified ivy-python programs on trivy: ``python -m trivy.compat`` and ``install()``.

The programs are written by the tests, in ivy-python's style, and run as
subprocesses; the network test puts one on the test's own loopback bus with
a real ivy-python 4.0 agent (``trivy.testing.ivy_python_agent``) and waits
only on what each side reports.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trivy.compat
import trivy.compat.ivy
import trivy.compat.std_api
from trivy.testing import IvyPythonAgent, ivy_python_agent

#: Upper bound of each test (the machine may be busy).
TIMEOUT = 30.0
RUNNER = [sys.executable, "-m", "trivy.compat"]

IVYLIB = '''\
"""A helper library written for ivy-python: it takes the whole std_api at its top."""
from ivy.std_api import *


def join_bus(agent_name, bus, on_hello):
    """Join the bus; on_hello(agent, text) gets each 'to-prog TEXT'."""
    IvyInit(agent_name, agent_name + " READY", 0,
            lambda agent, event: None, lambda agent, num_id: None)
    IvyBindMsg(on_hello, "^to-prog (.*)")
    IvyStart(bus)
'''

PROGRAM = '''\
"""An agent written for ivy-python 4.0; it reports on stdout, one JSON line each."""
import json
import sys

import ivy
import ivy.ivy
import ivylib
from ivy.std_api import *


def report(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def on_hello(agent, text):
    report("received", text=text, sender=agent.agent_name)
    report("answered", count=IvySendMsg("from-prog " + text.upper()))


if __name__ == "__main__":
    report("started", argv=sys.argv, name=__name__, path0=sys.path[0],
           std_api=ivy.std_api.__name__, std_api_file=ivy.std_api.__file__,
           ivy_doc=ivy.__doc__, same_class=ivylib.IvyClient is ivy.ivy.IvyClient)
    ivylib.join_bus(sys.argv[1], sys.argv[2], on_hello)
    IvyMainLoop()
    report("stopped")
'''


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


async def test_an_unmodified_program_talks_to_ivy_python(bus: str, tmp_path: Path) -> None:
    _write(tmp_path / "ivylib" / "__init__.py", IVYLIB)
    _write(tmp_path / "prog.py", PROGRAM)
    with trio.fail_after(TIMEOUT):
        async with ivy_python_agent(bus, "PYPEER", bind=[r"^from-prog (.*)"]) as peer:
            process = await trio.lowlevel.open_process(
                [*RUNNER, "prog.py", "PROG", bus],
                cwd=tmp_path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            program = IvyPythonAgent(process)  # (it reads any JSON-lines reporter)
            try:
                started = await program.expect("started")
                assert started["argv"] == ["prog.py", "PROG", bus]
                assert started["name"] == "__main__"
                assert started["path0"] == str(await trio.Path(tmp_path).resolve())
                assert started["std_api"] == "trivy.compat.std_api"
                assert started["std_api_file"] == trivy.compat.std_api.__file__
                assert "trivy's stand-in" in started["ivy_doc"]
                assert started["same_class"] is True

                await peer.expect("connected", name="PROG")
                await peer.expect("regexp", sender="PROG", action="add", regexp="^to-prog (.*)")
                sent = await peer.request("send", "sent", text="to-prog hello")
                assert sent["count"] == 1
                received = await program.expect("received")
                assert (received["text"], received["sender"]) == ("hello", "PYPEER")
                assert (await program.expect("answered"))["count"] == 1
                msg = await peer.expect("msg", sender="PROG")
                assert msg["groups"] == ["HELLO"]

                assert (await peer.request("die", "die_sent", to="PROG"))["count"] == 1
                await program.expect("stopped")  # IvyMainLoop returned
                assert await process.wait() == 0
                await peer.expect("disconnected", name="PROG")
            finally:
                await program.terminate()


# ------------------------------------------------------------- as python runs it

REPORT_START = """\
import json, sys
print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0]}))
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("form", [["prog.py"], ["-m", "prog"], ["-mprog"]])
def test_the_program_starts_as_under_python(tmp_path: Path, form: list[str]) -> None:
    # (under python itself, ivy-python is the one installed beside trivy)
    code = REPORT_START + "import ivy.std_api; print(ivy.std_api.__name__)\n"
    _write(tmp_path / "prog.py", code)
    args = [*form, "a", "b c"]
    plain = _run([sys.executable, *args], tmp_path)
    ours = _run([*RUNNER, *args], tmp_path)
    assert (plain.returncode, ours.returncode) == (0, 0), ours.stderr
    start, module = ours.stdout.splitlines()
    assert json.loads(start) == json.loads(plain.stdout.splitlines()[0])
    if form[0] == "prog.py":
        assert json.loads(start)["argv"] == ["prog.py", "a", "b c"]
    else:
        assert json.loads(start)["argv"] == [str(tmp_path / "prog.py"), "a", "b c"]
    assert json.loads(start)["name"] == "__main__"
    assert (module, plain.stdout.splitlines()[1]) == ("trivy.compat.std_api", "ivy.std_api")


def test_sys_exit_status_goes_through(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", "import sys\nsys.exit(3)\n")
    assert _run([*RUNNER, "prog.py"], tmp_path).returncode == 3


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", 'def fail():\n    raise ValueError("boom")\nfail()\n')
    result = _run([*RUNNER, "prog.py"], tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "prog.py", line 3')  # the runner's frames are left out
    assert lines[-1] == "ValueError: boom"
    assert "runpy" not in result.stderr and "trivy" not in result.stderr


def test_keyboard_interrupt_ends_the_program_as_under_python(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", "raise KeyboardInterrupt\n")
    plain = _run([sys.executable, "prog.py"], tmp_path)
    ours = _run([*RUNNER, "prog.py"], tmp_path)
    assert ours.returncode == plain.returncode != 0
    assert ours.stderr.splitlines()[-1] == "KeyboardInterrupt"
    assert "trivy" not in ours.stderr


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ([], 2, "no PROGRAM given"),
        (["-m"], 2, "-m needs a MODULE"),
        (["--bogus"], 2, "unknown option --bogus"),
        (["missing.py"], 2, "can't open file"),
        (["-m", "missing_module"], 1, "No module named missing_module"),
    ],
)
def test_a_missing_program_is_reported(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    result = _run([*RUNNER, *args], tmp_path)
    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_prints_the_usage(tmp_path: Path) -> None:
    result = _run([*RUNNER, "--help"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m trivy.compat PROGRAM")


# ------------------------------------------------------------------- install()


def _ivy_names() -> list[str]:
    return [name for name in sys.modules if name == "ivy" or name.startswith("ivy.")]


@pytest.fixture
def no_ivy() -> Iterator[None]:
    """No ``ivy`` module imported during the test; as it was afterwards."""
    saved = {name: sys.modules.pop(name) for name in _ivy_names()}
    try:
        yield
    finally:
        trivy.compat.uninstall()
        for name in _ivy_names():
            del sys.modules[name]
        sys.modules.update(saved)


def test_install_makes_ivy_modules_trivys_own(no_ivy: None) -> None:
    trivy.compat.install()
    import ivy.std_api

    assert ivy.ivy is trivy.compat.ivy  # std_api imported it, as ivy-python's does
    from ivy import ivy as ivy_ivy
    from ivy.ivy import IvyServer

    assert ivy.std_api is trivy.compat.std_api
    assert ivy_ivy is trivy.compat.ivy
    assert IvyServer is trivy.compat.ivy.IvyServer
    assert importlib.import_module("ivy.std_api") is trivy.compat.std_api
    assert "trivy's stand-in" in (ivy.__doc__ or "")
    assert ivy.__spec__ is not None and ivy.__spec__.name == "ivy"
    # trivy's modules kept their own identity
    for module in (trivy.compat.ivy, trivy.compat.std_api):
        spec: Any = module.__spec__
        assert spec.name == module.__name__
        assert module.__name__.startswith("trivy.compat.")
        assert spec.origin == module.__file__
        assert sys.modules[module.__name__] is module


def test_install_is_idempotent_and_first(no_ivy: None) -> None:
    trivy.compat.install()
    sys.meta_path.append(sys.meta_path.pop(0))
    trivy.compat.install()
    hooks = [finder for finder in sys.meta_path if type(finder).__module__.startswith("trivy.")]
    assert len(hooks) == 1 and sys.meta_path[0] is hooks[0]


@pytest.mark.parametrize("name", ["ivy._server", "ivy.foo", "ivy.ivy.sub"])
def test_no_other_ivy_module_is_found(no_ivy: None, name: str) -> None:
    trivy.compat.install()
    with pytest.raises(ModuleNotFoundError) as caught:
        importlib.import_module(name)
    assert caught.value.name == name
    with pytest.raises(ImportError):
        from ivy import _server  # noqa: F401


def test_uninstall_removes_the_hook_and_the_aliases(no_ivy: None) -> None:
    trivy.compat.install()
    import ivy.std_api

    trivy.compat.uninstall()
    trivy.compat.uninstall()  # (again: nothing to do)
    assert _ivy_names() == []
    assert all(type(f).__module__ != "trivy.compat._install" for f in sys.meta_path)
    assert sys.modules["trivy.compat.ivy"] is trivy.compat.ivy
    import ivy  # now ivy-python's, installed beside trivy for the tests

    assert "trivy" not in (ivy.__doc__ or "")


def test_install_refuses_after_ivy_python_was_imported(no_ivy: None) -> None:
    sys.modules["ivy"] = types.ModuleType("ivy", "ivy-python")
    with pytest.raises(RuntimeError, match=r"ivy \(ivy-python\) was imported before"):
        trivy.compat.install()
    assert all(type(f).__module__ != "trivy.compat._install" for f in sys.meta_path)
