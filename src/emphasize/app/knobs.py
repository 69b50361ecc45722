"""Method knobs for the app, derived from the method registry (no list of methods or fields per method here).

Each method's frozen config (`emphasize.methods.config_fields`: nested configs flattened as `outer.inner`) gives
one knob per scalar field (`int`, `float`, `bool`, `str`, and `int | None` / `float | None`); tuple-valued fields
(refinement thresholds, scale ranges) keep their defaults. A knob whose field name is in `MAIN_FIELDS` is shown
at once, the others under "more knobs". `build_config` turns the values back into the method's config, so the
config's own validation names a bad value. A new method's fields appear with no change here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emphasize.methods import config_fields, get_method

MAIN_FIELDS = frozenset(
    {
        "schedule.scale_factor",  # attend-excite / importance: step size alpha_0
        "schedule.stop",  # attend-excite / importance: fraction of steps with guidance
        "attention_factor",  # the guided attention level
        "stop",  # reweight: fraction of steps with reweighting
        "mean_restore",  # embed: restore the embedding mean
        "optimization_steps",  # SGOOL/DOODL: updates of the initial latent
        "grad_scale",  # SGOOL/DOODL: learning rate
        "salient_weight",  # SGOOL: lambda on the salient crops
        "num_crops",  # SGOOL: crops at most
        "sampling_steps",  # SGOOL/DOODL: EDICT steps
    }
)  # field names (not methods) shown first; every other scalar field is a knob too, under "more knobs"
KINDS = ("float", "int", "bool", "str")  # knob kinds; `optional` marks `X | None` fields


@dataclass(frozen=True)
class Knob:
    """One editable field of a method's config."""

    method: str  # the method it belongs to
    name: str  # the dotted field name, e.g. `schedule.scale_factor`
    kind: str  # one of KINDS
    default: Any  # the config's default (None for an optional field left to the model card)
    optional: bool  # the field accepts None (`int | None`): an empty box means the default rule
    main: bool  # shown at once (`MAIN_FIELDS`), else under "more knobs"

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def _kind(type_name: Any) -> tuple[str, bool] | None:
    """(kind, optional) of a field type as `config_fields` gives it (a string under postponed annotations)."""
    name = getattr(type_name, "__name__", type_name)
    if not isinstance(name, str):
        return None
    parts = [p.strip() for p in name.split("|")]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    if len(rest) == 1 and rest[0] in KINDS:
        return rest[0], optional
    return None


def knobs(method: str, defaults: Mapping[str, Any] | None = None) -> tuple[Knob, ...]:
    """The knobs of a registered method, in config field order.

    Args:
        method: a name of the method registry.
        defaults: field name -> a default that replaces the config's for the app (e.g. fewer SGOOL steps on a
            CPU); names the method does not have are ignored.
    """
    defaults = defaults or {}
    out = []
    for name, type_name, default in config_fields(method):
        kind = _kind(type_name)
        if kind is None:
            continue
        out.append(Knob(method, name, kind[0], defaults.get(name, default), kind[1], name in MAIN_FIELDS))
    return tuple(out)


def _coerce(knob: Knob, value: Any) -> Any:
    """A value from a form field as the knob's type (ValueError naming the knob)."""
    if value is None or (isinstance(value, str) and not value.strip() and knob.kind != "str"):
        if knob.optional:
            return None
        raise ValueError(f"{knob.method} knob {knob.name} needs a value (default {knob.default!r})")
    if knob.kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{knob.method} knob {knob.name}={value!r} must be true or false")
    if knob.kind == "str":
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{knob.method} knob {knob.name}={value!r} must be a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{knob.method} knob {knob.name}={value!r} must be a finite number")
    if knob.kind == "int":
        if number != int(number):
            raise ValueError(f"{knob.method} knob {knob.name}={value!r} must be a whole number")
        return int(number)
    return number


def _replace_nested(config, path: list[str], value: Any):
    """`dataclasses.replace` down a dotted path of nested frozen configs."""
    head = path[0]
    if not hasattr(config, head):
        raise ValueError(f"{type(config).__name__} has no field {head!r}")
    if len(path) == 1:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: _replace_nested(getattr(config, head), path[1:], value)})


def build_config(method: str, values: Mapping[str, Any]):
    """The method's config with the given knob values (missing knobs keep the config's defaults).

    Args:
        method: a registered method.
        values: knob name -> value from the form (strings and floats are coerced to the field's type).

    Raises:
        ValueError: an unknown knob, a value of the wrong type, or one the config rejects (its message).
    """
    by_name = {k.name: k for k in knobs(method)}
    config = get_method(method).config_class()
    for name, value in values.items():
        if name not in by_name:
            raise ValueError(f"method {method!r} has no knob {name!r}; knobs: {', '.join(by_name)}")
        value = _coerce(by_name[name], value)
        try:
            config = _replace_nested(config, name.split("."), value)
        except ValueError as err:  # the config's own validation, with the knob it came from
            raise ValueError(f"{method} knob {name}: {err}") from None
    return config
