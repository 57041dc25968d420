"""Flag spelling shared by the argparse subcommands (``export``, ``anchors``, ``convert``, ``ablate``, ``evolve``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["parse_args"]



def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` accepting both spellings of every option: ``--img_size`` (the style of ``fit``,
    ``validate``, ... and of ``--help``) and ``--img-size``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = set(parser._option_string_actions)
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        underscored = "--" + name[2:].replace("-", "_")
        out.append(underscored + sep + value if name.startswith("--") and underscored in known else arg)
    return parser.parse_args(out)

