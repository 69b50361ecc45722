"""Word-weighting and latent-optimization methods behind one registry.

One module per method; `MODULES` is the registry's index (name -> module), the one list of methods: the CLI, the
demo, the benchmarks and the app read it (or `method_names`) instead of their own lists. Importing this package
imports no torch (so `emphasize --help` stays instant); the method classes are loaded on first use
(`base.REGISTRY`, `get_method`). Adding a method: its module with a `Method` subclass under `@register`, and one
line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

MODULES: dict[str, str] = {  # method name -> its module (here, or a dotted path for a plug-in), in list order
    "plain": "plain",
    "attend-excite": "attend_excite",
    "importance": "importance",
    "reweight": "reweight",
    "embed": "embed",
    "sgool": "saliency",
    "doodl": "saliency",
}

_EXPORTS = {
    "REGISTRY": "base",
    "Method": "base",
    "MethodInputs": "base",
    "Plan": "base",
    "config_fields": "base",
    "get_method": "base",
    "guidance_plan": "base",
    "method_config": "base",
    "method_names": "base",
    "register": "base",
    "AttendExciteConfig": "attend_excite",
    "EmbedConfig": "embed",
    "ImportanceConfig": "importance",
    "PlainConfig": "plain",
    "ReweightConfig": "reweight",
}
__all__ = ["MODULES", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # static analysers see the real imports
    from .attend_excite import AttendExciteConfig  # noqa: F401
    from .base import (  # noqa: F401
        REGISTRY,
        Method,
        MethodInputs,
        Plan,
        config_fields,
        get_method,
        guidance_plan,
        method_config,
        method_names,
        register,
    )
    from .embed import EmbedConfig  # noqa: F401
    from .importance import ImportanceConfig  # noqa: F401
    from .plain import PlainConfig  # noqa: F401
    from .reweight import ReweightConfig  # noqa: F401
