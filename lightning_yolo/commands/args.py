"""Flag spelling shared by the argparse subcommands (``export``, ``anchors``, ``convert``, ``ablate``, ``evolve``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..compat import option_strings

__all__ = ["parse_args", "split_passthrough"]


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` accepting both spellings of every option: ``--img_size`` (the style of ``fit``,
    ``validate``, ... and of ``--help``) and ``--img-size``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = option_strings(parser)
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        underscored = "--" + name[2:].replace("-", "_")
        out.append(underscored + sep + value if name.startswith("--") and underscored in known else arg)
    return parser.parse_args(out)


def split_passthrough(argv: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """``(own, passthrough)``: the arguments before a ``--`` and those after it, which a command hands on to every
    ``fit`` it starts (``ablate``, ``evolve``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]
