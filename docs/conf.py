"""Sphinx configuration of trivy's documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs <output>``;
the build needs no network access.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import trivy

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
html_static_path: list[str] = []
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


def setup(app: Any) -> None:
    # before napoleon (priority 500) turns the fields into reST
    app.connect("autodoc-process-docstring", _join_wrapped_names, priority=400)
    # and after it
    app.connect("autodoc-process-docstring", _undo_prose_type, priority=600)
