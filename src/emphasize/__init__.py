"""emphasize: tell a pretrained diffusion model which words and which regions of an image matter.

    import emphasize
    result = emphasize.generate(pipe, "a (cat:1.8) and a (frog:0.6)", method="importance")

Public names are imported lazily, so `import emphasize` (and `emphasize --help`) stays instant.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "generate": "emphasize.api",
    "edit": "emphasize.api",
    "Result": "emphasize.api",
    "weighted_embeds": "emphasize.api",
    "PromptEmbeds": "emphasize.api",
    "SamplingConfig": "emphasize.config",
    "EditSamplingConfig": "emphasize.config",
    "PlainConfig": "emphasize.config",
    "AttendExciteConfig": "emphasize.config",
    "ImportanceConfig": "emphasize.config",
    "ReweightConfig": "emphasize.config",
    "EmbedConfig": "emphasize.config",
    "GuidanceSchedule": "emphasize.optimize",
    "AttentionLossConfig": "emphasize.losses",
    "parse_prompt": "emphasize.prompts",
    "weighted_prompt_from_words": "emphasize.prompts",
    "load_pipeline": "emphasize.models.load",
    "load_clip": "emphasize.models.load",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'emphasize' has no attribute {name!r}")
