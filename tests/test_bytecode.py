"""What CPython makes of the package's per-message code.

CPython 3.11 compiles ``name.method(...)``, where ``name`` was imported, as
it would a module's function: an attribute load, then a call. For a module
or a class that is what it should be; for any other object (an imported
dict, a shared instance) the load makes a bound method on every call. One
such call on the send path (``MSG_HEADS.get``) cost 4 % of a text's
instructions; none may come back unnoticed.
"""

from __future__ import annotations

import dis
import importlib
import inspect
import itertools
import pkgutil
import sys
import types
from collections.abc import Iterator

import pytest

import trivy


def _code_objects(module: types.ModuleType) -> Iterator[tuple[str, types.CodeType]]:
    """Every function of the module (methods and nested functions included)."""
    pending: list[types.CodeType] = []
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        members = vars(value).values() if inspect.isclass(value) else [value]
        for member in members:
            function = getattr(member, "__func__", member)
            if isinstance(member, property):
                function = member.fget
            if isinstance(function, types.FunctionType):
                pending.append(function.__code__)
    while pending:
        code = pending.pop()
        yield getattr(code, "co_qualname", code.co_name), code  # (3.11+: co_qualname)
        pending.extend(c for c in code.co_consts if isinstance(c, types.CodeType))


def _all_modules() -> Iterator[types.ModuleType]:
    for info in pkgutil.walk_packages(trivy.__path__, "trivy."):
        yield importlib.import_module(info.name)


def _bound_per_call(module: types.ModuleType) -> list[str]:
    """Calls of a method of an imported object that is neither a module nor a class."""
    found = []
    for name, code in _code_objects(module):
        instructions = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
        for before, after in itertools.pairwise(instructions):
            if before.opname != "LOAD_GLOBAL" or "NULL" not in before.argrepr:
                continue
            if after.opname != "LOAD_ATTR" or "NULL" in after.argrepr:
                continue
            target = vars(module).get(before.argval)
            if not (inspect.ismodule(target) or inspect.isclass(target)):
                found.append(f"{module.__name__}.{name}: {before.argval}.{after.argval}()")
    return found


def _probe(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(source, vars(module))  # (code the scan must flag, or must not)
    module.per_message.__module__ = name
    return module


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="3.10 compiles such a call as a method call: nothing to flag"
)
def test_the_scan_flags_only_a_method_of_an_imported_object() -> None:
    fine = _probe(
        "fine",
        "import math\n"
        "from collections import OrderedDict\n"
        "TABLE = {}\n"
        "def per_message(key):\n"
        "    return TABLE.get(key), math.floor(1.5), OrderedDict.fromkeys(key)\n",
    )
    bound = _probe(
        "bound",
        "from trivy._msg_bytes import MSG_HEADS\n"
        "def per_message(key):\n"
        "    return MSG_HEADS.get(key)\n",
    )
    assert _bound_per_call(fine) == []  # a module, a class, a dict of the module's own
    assert _bound_per_call(bound) == ["bound.per_message: MSG_HEADS.get()"]


def test_no_method_call_on_an_imported_object_makes_a_bound_method() -> None:
    found = [call for module in _all_modules() for call in _bound_per_call(module)]
    assert found == []
