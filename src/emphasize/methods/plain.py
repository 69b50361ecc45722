"""Plain sampling: the model as it is (weighting syntax is stripped from the prompt)."""

from __future__ import annotations

from dataclasses import dataclass

from emphasize.methods.base import Method, register


@dataclass(frozen=True)
class PlainConfig:
    """No guidance: the model as it is (weighting syntax is stripped from the prompt)."""


@register
class Plain(Method):
    name = "plain"
    config_class = PlainConfig
    summary = "the model as it is; weights are ignored"
