"""Flag spelling and error lines shared by the argparse subcommands (``export``, ``anchors``, ``convert``, ``ablate``,
``evolve``)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..compat import option_strings

__all__ = ["parse_args", "split_passthrough"]


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` accepting both spellings of every option: ``--img_size`` (the style of ``fit``,
    ``validate``, ... and of ``--help``) and ``--img-size``.

    As in ``fit``, ``validate``, ...: option names are never completed from a prefix (``--form`` is not ``--format``)
    and every error of ``parser``, also a later ``parser.error(...)`` of the command, is one line on stderr with the
    closest valid names, exit status 2.
    """
    parser.allow_abbrev = False
    parser.error = functools.partial(_one_line_error, parser)  # type: ignore[method-assign]
    argv = list(sys.argv[1:] if argv is None else argv)
    known = option_strings(parser)
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        underscored = "--" + name[2:].replace("-", "_")
        out.append(underscored + sep + value if name.startswith("--") and underscored in known else arg)
    return parser.parse_args(out)


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """``error: <message> (did you mean --x?) (all options: <prog> --help)``, then exit 2 (argparse's own error
    prints the whole usage first)."""
    from ..errors import suggest_options

    names = sorted({o for action in parser._actions for o in action.option_strings if o.startswith("--")})
    text = " ".join(message.split())
    sys.stderr.write(f"error: {text}{suggest_options(message, names)} (all options: {parser.prog} --help)\n")
    parser.exit(2)


def split_passthrough(argv: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """``(own, passthrough)``: the arguments before a ``--`` and those after it, which a command hands on to every
    ``fit`` it starts (``ablate``, ``evolve``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]
