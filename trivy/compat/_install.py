"""An import hook that makes ``import ivy...`` give trivy's compat modules.

After :func:`install`, ``ivy.ivy`` is the module object :mod:`trivy.compat.ivy`
and ``ivy.std_api`` is :mod:`trivy.compat.std_api`, whatever form the import
takes. ``ivy`` itself is a small package module of trivy's own.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["install", "uninstall"]

#: The name of ivy-python's package, and its modules trivy replaces.
PACKAGE = "ivy"
ALIASES = {"ivy.ivy": "trivy.compat.ivy", "ivy.std_api": "trivy.compat.std_api"}

PACKAGE_DOC = """trivy's stand-in for ivy-python's ``ivy`` package.

``trivy.compat.install()`` put it here: ``ivy.ivy`` is ``trivy.compat.ivy``
and ``ivy.std_api`` is ``trivy.compat.std_api``, ivy-python 4.0's API over
trivy's bus. ivy-python itself, if installed, is not used.
"""
#: ivy-python's ``ivy.__version__``: the version of the API provided.
API_VERSION = "4.0"


class _IvyImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads ``ivy``, ``ivy.ivy`` and ``ivy.std_api``; no other ``ivy.X``."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == PACKAGE:
            return ModuleSpec(fullname, self, origin="trivy.compat", is_package=True)
        if fullname in ALIASES:
            return ModuleSpec(fullname, self, origin=ALIASES[fullname])
        if fullname.startswith(PACKAGE + "."):
            # Raised rather than left to later finders: another one (an editable
            # install of ivy-python, say) could find the real module.
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: trivy's stand-in for ivy-python "
                f"has only {', '.join(sorted(ALIASES))}",
                name=fullname,
            )
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # the default module; for an alias, a placeholder (see exec_module)

    def exec_module(self, module: ModuleType) -> None:
        name = module.__name__
        if name == PACKAGE:
            module.__doc__ = PACKAGE_DOC
            module.__version__ = API_VERSION  # type: ignore[attr-defined]
            return
        if name == "ivy.std_api":
            importlib.import_module("ivy.ivy")  # as ivy-python's std_api imports it
        # importlib returns what sys.modules holds once exec_module is done, so
        # trivy's module takes the placeholder's place untouched. Handing it out
        # from create_module instead would let importlib overwrite its __spec__.
        sys.modules[name] = importlib.import_module(ALIASES[name])


_importer = _IvyImporter()
_lock = threading.Lock()


def _is_ours(name: str, module: ModuleType | None) -> bool:
    if name == PACKAGE:
        return getattr(module, "__loader__", None) is _importer
    target = ALIASES.get(name)
    return target is not None and module is sys.modules.get(target)


def _ivy_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in list(sys.modules.items())
        if (name == PACKAGE or name.startswith(PACKAGE + ".")) and module is not None
    }


def install() -> None:
    """Make ``import ivy.ivy`` and ``import ivy.std_api`` give trivy's compat modules.

    Puts an import hook first on ``sys.meta_path``: ``ivy.ivy`` is then the
    module :mod:`trivy.compat.ivy` itself and ``ivy.std_api`` is
    :mod:`trivy.compat.std_api`; ``ivy`` is a package of trivy's own, and
    any other ``ivy.X`` raises :class:`ModuleNotFoundError`. Nothing is
    written to disk; ivy-python, if installed, is not used. Calling it again
    does nothing. ``python -m trivy.compat PROGRAM`` calls it.

    Raises:
      RuntimeError: ivy-python's ``ivy`` was imported before: the modules
        that imported it hold it already, so they cannot be moved to trivy.
    """
    with _lock:
        foreign = sorted(name for name, m in _ivy_modules().items() if not _is_ours(name, m))
        if foreign:
            raise RuntimeError(
                f"{', '.join(foreign)} (ivy-python) was imported before "
                "trivy.compat.install(): call install() before anything imports ivy, "
                "or run the program with `python -m trivy.compat PROGRAM`"
            )
        if _importer in sys.meta_path:
            sys.meta_path.remove(_importer)
        sys.meta_path.insert(0, _importer)


def uninstall() -> None:
    """Undo :func:`install`: remove the hook and the ``ivy`` modules it provided.

    Modules that imported them keep their references; trivy's modules stay
    imported under their own names. Useful in tests.
    """
    with _lock:
        while _importer in sys.meta_path:
            sys.meta_path.remove(_importer)
        for name, module in _ivy_modules().items():
            if _is_ours(name, module):
                del sys.modules[name]
