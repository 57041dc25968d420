"""The base of the package's settings dataclasses (:class:`~lightning_yolo.models.config.ModelCfg`,
:class:`~lightning_yolo.training.config.LossCfg`, :class:`~lightning_yolo.data.config.AugmentCfg`).

Each is a frozen dataclass that adds only its fields and their validation (``__post_init__``); this base gives all
three the same field-name check, copies with changes, a plain-data form for checkpoints and YAML and the way back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

__all__ = ["Settings"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of a frozen settings dataclass: :meth:`replace`, :meth:`to_dict`, :meth:`from_dict`, :meth:`coerce`.

    A dataclass itself (without fields), so every class in a settings class's bases is one: jsonargparse then
    shows the fields as a nested group (``--model.loss.box_loss``), not a ``class_path`` / ``init_args`` pair.
    """

    #: What a field is called in the error for an unknown name (``"unknown loss setting(s) [...]"``).
    _what: ClassVar[str] = "setting"

    @classmethod
    def check_names(cls, data: dict[str, Any]) -> None:
        """Raise a ``TypeError`` naming the keys of ``data`` that are not fields, and the fields."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise TypeError(f"unknown {cls._what}(s) {unknown}; expected some of {sorted(names)}")

    def replace(self, **changes: Any) -> Any:
        """A copy with the given fields changed (validated again); lists become tuples."""
        self.check_names(changes)
        return dataclasses.replace(self, **{k: _freeze(v) for k, v in changes.items()})  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (numbers, strings, lists, dicts) for checkpoints and YAML."""
        return _thaw(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`: missing keys keep their defaults, unknown keys raise a ``TypeError``."""
        cls.check_names(data)
        return cls(**{k: _freeze(v) for k, v in data.items()})

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """The settings from themselves, their :meth:`to_dict` form (as checkpoints store them) or ``None``
        (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise TypeError(f"expected a {cls.__name__}, a dict of its fields or None, got {type(value).__name__}")


def _freeze(value: Any) -> Any:
    """Lists (from YAML / JSON) to tuples, so a frozen config stays hashable and comparable."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value
