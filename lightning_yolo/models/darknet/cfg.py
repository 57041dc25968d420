"""darknet ``.cfg`` text: parse it into :class:`Section` objects (with file lines for messages), and write it."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ALIASES = {"conv": "convolutional", "max": "maxpool", "network": "net"}


class DarknetError(ValueError):
    """A cfg or weights file that cannot be read or mapped; the message names the file, line and key."""


@dataclass
class Section:
    """One ``[type]`` block of a cfg: options as darknet reads them (whitespace removed), with line numbers."""

    type: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0
    key_lines: dict[str, int] = field(default_factory=dict)
    source: str = "<cfg>"

    def where(self, key: str | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key else self.line
        return f"{self.source}:{line}"

    def get(self, key: str, default: Any, kind: type = int) -> Any:
        """Option ``key`` converted with ``kind`` (int, float, str), or ``default``; bad values name file:line."""
        if key not in self.options:
            return default
        raw = self.options[key]
        try:
            return kind(float(raw)) if kind is int and re.fullmatch(r"[-+]?\d+\.0*", raw) else kind(raw)
        except ValueError:
            msg = f"{self.where(key)}: [{self.type}] {key}={raw!r} is not a valid {kind.__name__}"
            raise DarknetError(msg) from None

    def get_list(self, key: str, kind: type = int) -> list[Any]:
        raw = self.options.get(key, "")
        try:
            return [kind(v) for v in raw.split(",") if v != ""]
        except ValueError:
            raise DarknetError(
                f"{self.where(key)}: [{self.type}] {key}={raw!r} is not a comma-separated list of {kind.__name__}"
            ) from None


def parse_cfg(source: str | os.PathLike, text: str | None = None) -> list[Section]:
    """Read a darknet cfg into its sections, ``[net]`` first when present.

    Follows darknet's ``read_cfg``: whitespace is removed from every line, lines starting with ``#`` or ``;`` and
    empty lines are skipped, ``[name]`` opens a section (aliases ``[conv]``, ``[max]``, ``[network]`` are
    normalised), every other line must be ``key=value``.

    Args:
        source: path of the cfg (read when ``text`` is ``None``), or a name for messages.
        text: the cfg text itself.

    Raises:
        FileNotFoundError: no such file.
        DarknetError (a ``ValueError``): a line that is neither a section header nor ``key=value``, an option
            before the first section, a repeated key, or no section at all; the message names file and line.
    """
    name = os.fspath(source)
    if text is None:
        if not os.path.isfile(name):
            raise FileNotFoundError(f"darknet cfg not found: {name!r}")
        text = Path(name).read_text(encoding="utf-8", errors="replace")
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise DarknetError(f"{name}:{number}: malformed section header {raw.strip()!r}")
            kind = line[1:-1].lower()
            sections.append(Section(_ALIASES.get(kind, kind), line=number, source=name))
            continue
        if "=" not in line:
            raise DarknetError(f"{name}:{number}: expected key=value or [section], got {raw.strip()!r}")
        if not sections:
            raise DarknetError(f"{name}:{number}: option {raw.strip()!r} before the first [section]")
        key, value = line.split("=", 1)
        key = key.lower()
        section = sections[-1]
        if key in section.options:
            raise DarknetError(
                f"{name}:{number}: [{section.type}] at line {section.line} sets {key!r} twice "
                f"(first at line {section.key_lines[key]})"
            )
        section.options[key] = value
        section.key_lines[key] = number
    if not sections:
        raise DarknetError(f"{name}: no [section] found; not a darknet cfg")
    return sections


def split_net(sections: list[Section]) -> tuple[Section | None, list[Section]]:
    """``([net] or None, the layers)``; a ``[net]`` anywhere but first is an error."""
    if sections and sections[0].type == "net":
        return sections[0], sections[1:]
    for s in sections[1:]:
        if s.type == "net":
            raise DarknetError(f"{s.where()}: [net] must be the first section")
    return None, sections


def format_cfg(net: dict[str, Any], layers: Sequence[Section]) -> str:
    """cfg text: a ``[net]`` block with ``net`` options, then each layer with a ``# index`` comment."""
    out = ["[net]"] + [f"{k}={v}" for k, v in net.items()] + [""]
    for i, s in enumerate(layers):
        out.append(f"# {i}")
        out.append(f"[{s.type}]")
        out += [f"{k}={v}" for k, v in s.options.items()]
        out.append("")
    return "\n".join(out)


