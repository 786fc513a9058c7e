"""Sphinx configuration of trivy's documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs <output>``;
the build needs no network access.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

from sphinx.util import logging

import trivy

logger = logging.getLogger(__name__)

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "trivy"
release = trivy.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "clihelp",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# MyST: ::: fences for admonitions, and anchors for links to sections
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# autodoc and napoleon (the docstrings are Google style)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"trivy {release}"
html_show_sphinx = False
html_show_copyright = False
html_static_path = ["_static"]
html_css_files = ["trivy.css"]  # long JSON lines wrap
pygments_style = "friendly"
pygments_dark_style = "monokai"


_FIELD_SECTIONS = {"Args:", "Arguments:", "Parameters:", "Attributes:"}
_NAMES_GO_ON = re.compile(r"[\w, ]+,")  # a line of names that ends with a comma
_MORE_NAMES = re.compile(r"[\w, ]+(,|:.*)")  # more names, maybe the description


def _join_wrapped_names(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Put a field's names on one line when they wrap ("a, b,\n  c: text").

    Napoleon reads only the first line of a field as names; the docstrings
    sometimes document several options in one field whose names wrap.
    """
    in_fields = False
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped in _FIELD_SECTIONS:
            in_fields = True
        elif stripped and not lines[i].startswith(" "):
            in_fields = False
        elif (
            in_fields
            and i + 1 < len(lines)
            and _NAMES_GO_ON.fullmatch(stripped)
            and _MORE_NAMES.fullmatch(lines[i + 1].strip())
        ):
            lines[i] = f"{lines[i].rstrip()} {lines.pop(i + 1).strip()}"
            continue
        i += 1


def _is_prose(supposed_type: str) -> bool:
    """Whether text napoleon took for a type is prose (a space outside brackets)."""
    return " " in re.sub(r"\[.*?\]", "", supposed_type)


_RETURNS_WITH_TYPE = re.compile(r":returns: \*(?P<type>.+?)\* -- (?P<text>.*)")


def _undo_prose_type(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give back text that napoleon read as "type: description".

    A property's first line "Our own subscriptions: id → regexp", or a
    Returns section "the number sent (0: nobody)", is prose, not a type:
    when the supposed type has a space outside brackets, the text is put
    back whole.
    """
    for i, line in enumerate(lines):
        found = _RETURNS_WITH_TYPE.fullmatch(line)
        if found and _is_prose(found["type"]):
            lines[i] = f":returns: {found['type']}: {found['text']}"
    if what not in ("property", "attribute") or not lines:
        return
    last = max(i for i, line in enumerate(lines) if line.strip()) if any(lines) else 0
    field = lines[last].strip()
    if field.startswith(":type: ") and _is_prose(field.removeprefix(":type: ")):
        del lines[last]
        lines[0] = f"{field.removeprefix(':type: ')}: {lines[0]}"


_SEVERAL_NAMES = re.compile(r"(?P<head>\s*\.\. attribute:: )(?P<names>\w+(?:, \w+)+)")


def _anchor_each_name(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give each name of a field that documents several its own target.

    Napoleon makes ``.. attribute:: a, b, c`` of "a, b, c: text", which no
    link reaches; the Python domain takes one signature a line, each with
    its own target. The names get their type when they share one.
    """
    for i, line in enumerate(lines):
        found = _SEVERAL_NAMES.fullmatch(line)
        if not found:
            continue
        names = found["names"].split(", ")
        align = " " * len(found["head"])
        lines[i : i + 1] = [found["head"] + names[0], *(align + n for n in names[1:])]
        types = {getattr(obj, "__annotations__", {}).get(n) for n in names}
        if len(types) == 1 and None not in types:
            end = i + len(names)
            indent = found["head"][: -len(".. attribute:: ")] + "   "
            while end < len(lines) and (not lines[end] or lines[end].startswith(indent)):
                end += 1
            while not lines[end - 1]:
                end -= 1
            lines[end:end] = ["", f"{indent}:type: {types.pop()}"]


_FIELD = re.compile(r"  (?P<names>\w+(?:, \w+)*):(?P<text>.*)")


def _attribute_fields(cls: type) -> list[tuple[list[str], str]]:
    """The fields of a class's "Attributes:" section: (names, description)."""
    lines = inspect.getdoc(cls).splitlines()
    _join_wrapped_names(None, "class", "", cls, None, lines)
    fields: list[tuple[list[str], str]] = []
    in_section = False
    for line in lines:
        if line.strip() == "Attributes:":
            in_section = True
        elif line and not line.startswith(" "):
            in_section = False
        elif in_section and (found := _FIELD.fullmatch(line)):
            fields.append((found["names"].split(", "), found["text"].strip()))
        elif in_section and line.strip() and fields:
            names, text = fields[-1]
            fields[-1] = (names, f"{text} {line.strip()}".strip())
    return fields


def _first_sentence(text: str) -> str:
    """Up to the first full stop outside brackets and ``literals``."""
    depth, literal = 0, False
    for i, char in enumerate(text):
        if text.startswith("``", i):
            literal = not literal
        elif literal:
            continue
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "." and depth == 0 and text[i + 1 : i + 2] in ("", " "):
            return text[: i + 1]
    return text


_OPTIONS_FIELD = r":param \*\*options: "


def _list_bus_options(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Under open_ivy_bus's ``**options``, each option with one line and a link.

    The line is the first sentence of the option's description among
    BusOptions' attributes; options a field documents together share one.
    """
    if name != "trivy.open_ivy_bus":
        return
    from trivy._options import BusOptions, BusOptionsArgs

    starts = [i for i, line in enumerate(lines) if line.startswith(_OPTIONS_FIELD)]
    if not starts:
        logger.warning("open_ivy_bus documents no **options: its options are not listed")
        return
    end = starts[0] + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    documented = {n: field for field in _attribute_fields(BusOptions) for n in field[0]}
    indent = " " * len(_OPTIONS_FIELD)
    items: list[str] = [""]
    listed: set[str] = set()
    for option in BusOptionsArgs.__annotations__:
        if option in listed:
            continue
        if option not in documented:
            logger.warning("BusOptions documents no attribute %r", option)
        names, text = documented.get(option, ([option], ""))
        together = [n for n in names if n in BusOptionsArgs.__annotations__]
        listed.update(together)
        links = ", ".join(f":attr:`~trivy.BusOptions.{n}`" for n in together)
        items.append(f"{indent}* {links}: {_first_sentence(text)}")
    lines[end:end] = items


def setup(app: Any) -> None:
    # before napoleon (priority 500) turns the fields into reST
    app.connect("autodoc-process-docstring", _join_wrapped_names, priority=400)
    # and after it
    app.connect("autodoc-process-docstring", _undo_prose_type, priority=600)
    app.connect("autodoc-process-docstring", _anchor_each_name, priority=600)
    app.connect("autodoc-process-docstring", _list_bus_options, priority=600)
