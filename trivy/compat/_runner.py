"""``python -m trivy.compat``: run an unmodified ivy-python program on trivy.

:func:`~trivy.compat.install` first, then the program runs as ``python
PROGRAM ARGS`` or ``python -m MODULE ARGS`` would run it (through
:mod:`runpy`): same ``sys.argv``, ``__name__``, ``sys.path[0]`` and exit
status.
"""

from __future__ import annotations

import os
import pkgutil
import runpy
import sys
from collections.abc import Callable
from types import TracebackType

from ._install import install

__all__ = ["main"]

USAGE = """\
usage: python -m trivy.compat PROGRAM [ARGS...]
       python -m trivy.compat -m MODULE [ARGS...]

Run an ivy-python program unchanged on trivy: `import ivy.ivy` and
`import ivy.std_api` give trivy.compat's modules, then the program runs as
`python PROGRAM ARGS` (or `python -m MODULE ARGS`) would run it.
"""

#: The code between python and the program: left out of the tracebacks.
_OUR_FILES = frozenset(
    {
        os.path.abspath(__file__),
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py"),
        runpy.run_path.__code__.co_filename,
        runpy.run_module.__code__.co_filename,
    }
)

ExceptHook = Callable[[type[BaseException], BaseException, "TracebackType | None"], object]


def main(argv: list[str] | None = None) -> int:
    """Run the program named in ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status when the program ends by itself, or 2 for a
    usage error; the program's own ``SystemExit`` and exceptions go through.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    parsed = _parse(args)
    if isinstance(parsed, int):
        return parsed
    module, target, program_args = parsed
    try:
        install()
    except RuntimeError as exc:  # something imported ivy-python at startup (a .pth)
        print(f"python -m trivy.compat: {exc}", file=sys.stderr)
        return 1
    try:
        if module:
            sys.argv = ["-m", *program_args]  # what python holds while it looks the module up
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *program_args]
            _set_path0(target)
            runpy.run_path(target, run_name="__main__")
    except SystemExit:
        raise
    except (ImportError, OSError) as exc:
        if _program_frames(exc.__traceback__) is not None:
            _print_without_our_frames()
            raise
        # The program did not start: python's own messages and statuses.
        if isinstance(exc, ImportError):
            print(f"{sys.executable}: {exc}", file=sys.stderr)
            return 1
        path = os.path.abspath(target)
        reason = f"[Errno {exc.errno}] {exc.strerror}"
        print(f"{sys.executable}: can't open file {path!r}: {reason}", file=sys.stderr)
        return 2
    except BaseException:
        _print_without_our_frames()
        raise
    return 0


def _parse(args: list[str]) -> tuple[bool, str, list[str]] | int:
    """(module?, program or module, its arguments), or an exit status."""
    first = args[0] if args else ""
    if first in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if first.startswith("-m"):  # -m MODULE or -mMODULE, as python takes it
        rest = [first[2:], *args[1:]] if first[2:] else args[1:]
        if rest:
            return True, rest[0], rest[1:]
        return _usage_error("-m needs a MODULE")
    if first == "--":
        args = args[1:]
    elif first.startswith("-"):
        return _usage_error(f"unknown option {first}")
    if not args:
        return _usage_error("no PROGRAM given")
    return False, args[0], args[1:]


def _usage_error(message: str) -> int:
    print(f"python -m trivy.compat: {message}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


def _set_path0(program: str) -> None:
    """``sys.path[0]`` as ``python PROGRAM`` sets it, in place of ``-m``'s current directory."""
    if getattr(sys.flags, "safe_path", False):  # python -P (3.11+): no directory first
        return
    if pkgutil.get_importer(program) is None:  # a script: its directory, links resolved
        sys.path[0] = os.path.dirname(os.path.realpath(program))
    else:  # a directory or zip file with a __main__.py: run_path puts it first
        del sys.path[0]


def _program_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the program's first frame on (None if it never ran)."""
    while tb is not None and tb.tb_frame.f_code.co_filename in _OUR_FILES:
        tb = tb.tb_next
    return tb


def _print_without_our_frames() -> None:
    """Have the exception being raised printed without the runner's frames.

    Python itself prints it (through ``sys.excepthook``) and exits as usual:
    status 1, or by SIGINT for a KeyboardInterrupt. The hook is wrapped just
    for that one call, so the program never sees the wrapper.
    """
    previous: ExceptHook = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.excepthook = previous
        # (tb also holds the frames python added on the way out: ours too)
        value.__traceback__ = _program_frames(tb)
        previous(kind, value, value.__traceback__)

    sys.excepthook = hook
