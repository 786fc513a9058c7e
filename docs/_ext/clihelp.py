"""A directive that prints the ``trivy`` command's own help text.

``{clihelp} probe`` renders ``python -m trivy probe --help``; with no
argument, the top-level help; ``{clihelp} .help`` renders the probe's
``.help`` text. The reference then never drifts from the parser.

The block's content is the line that prints that help, as it is typed
(``$ python -m trivy probe --help``, or ``> .help`` at the probe's
prompt): the raw Markdown, as read on GitHub, then says what to run, and
the built page shows that line above the help. The directive checks it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

#: Columns the help is formatted for, whatever the terminal of the build.
WIDTH = "80"


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            chosen: argparse.ArgumentParser = action.choices[name]
            return chosen
    raise ValueError(f"no subcommand {name!r}")


def help_text(command: str) -> str:
    """The help of ``python -m trivy [command]`` (or the probe's ``.help``)."""
    from trivy._cli import build_parser
    from trivy._probe_commands import PROBE_HELP

    if command == ".help":
        return PROBE_HELP
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        if command:
            parser = _subparser(parser, command)
        return parser.format_help().rstrip()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def typed_line(command: str) -> str:
    """What one types to see the help of ``command``, prompt included."""
    if command == ".help":
        return "> .help"
    return f"$ python -m trivy {command} --help" if command else "$ python -m trivy --help"


class CliHelp(SphinxDirective):
    optional_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        command = self.arguments[0] if self.arguments else ""
        try:
            text = help_text(command)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        wanted = typed_line(command)
        if "\n".join(self.content).strip() != wanted:
            raise self.error(f"the block's content must be the line that prints it: {wanted}")
        text = f"{wanted}\n{text}"
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("clihelp", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
