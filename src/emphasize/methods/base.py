"""The method protocol and its registry: one module per method, one `register` line each.

A method is a name, its frozen config class, and the hooks it adds to sampling:

- `condition(config, groups, embeds)`: rewrite the conditional text embeddings (A1111 embedding weighting);
  `condition_text(config, groups, text, encode)` is the same with the whole `TextCondition` (each text encoder's
  part, SDXL's pooled embedding) and an encoder of other texts (ComfyUI's empty-prompt reference), for methods
  that need them;
- `prepare(config, inputs)`: a `Plan` with the attention controller it needs (capture, reweighting) and the
  pre-step hook on the latent (Attend-and-Excite / DynamicImportance updates of z_t).

`emphasize.api` knows no method by name: it parses the prompt, asks the registry for the method, builds the
plan, denoises and reports. A new method is one module under `methods/` plus its line in `MODULES`;
a new loss is a `losses.register_loss` function named by a method config's `objective`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, ClassVar

import torch

from emphasize.attention.control import AttentionController
from emphasize.guidance import attention_guidance
from emphasize.losses import LOSSES
from emphasize.optimize import GuidanceDiagnostics
from emphasize.sampling.conditioning import TextCondition
from emphasize.sampling.denoise import PreStepHook
from emphasize.sampling.guidance_rules import GuidedBatch
from emphasize.tokens import TokenGroup


@dataclass
class MethodInputs:
    """What a method may look at when it prepares its hooks."""

    pipe: Any  # the pipeline (its `unet`, `scheduler`, `tokenizer`; `name_or_path` for the model card)
    groups: list[TokenGroup]  # the weighted words and their token positions
    batch: GuidedBatch  # the guided batch of the sampling rule (CFG / InstructPix2Pix / InstructDiffusion)
    steps: int  # sampling steps
    latent_hw: tuple[int, int]  # latent size
    num_tokens: int  # prompt tokens without SOT/EOT
    diagnostics: GuidanceDiagnostics  # filled in place by latent-updating methods
    card_attention_factor: int | None = None  # the guided level the model card names (`api.card_factor`)


@dataclass
class Plan:
    """The hooks one sampling run needs."""

    controller: AttentionController | None = None  # installed as the UNet's attention processors when set
    pre_step: PreStepHook | None = None  # called on z_t before each denoising step
    freeze_unet: bool = False  # turn off the UNet's requires_grad while sampling (latent-only gradients)


class Method:
    """Base of every method: no hooks. Subclasses set the class attributes and override what they change."""

    name: ClassVar[str]  # the name users pass (`--method`, `method=`)
    config_class: ClassVar[type]  # its frozen config dataclass
    summary: ClassVar[str] = ""  # one line for help texts and UIs
    tasks: ClassVar[tuple[str, ...]] = ("t2i", "edit")  # "t2i": generate, "edit": instruction editing
    initial_latent: ClassVar[bool] = False  # optimizes the initial latent (SGOOL/DOODL) instead of hooking sampling
    needs_marked_words: ClassVar[bool] = False  # refuses a prompt with no marked word

    def check(self, config, groups: list[TokenGroup]) -> None:
        """Raise ValueError (one line) when the prompt cannot be run with this method."""
        if self.needs_marked_words and not groups:
            raise ValueError(f"{self.name} needs at least one marked word, e.g. 'a (cat) and a (frog)'")

    def condition(self, config, groups: list[TokenGroup], embeds: torch.Tensor) -> torch.Tensor:
        """The conditional text embeddings `(1, L, D)` the UNet sees (unchanged by default)."""
        return embeds

    def condition_text(
        self,
        config,
        groups: list[TokenGroup],
        text: TextCondition,
        encode: Callable[[str], TextCondition],
    ) -> TextCondition:
        """The prompt's whole text condition the UNet sees; by default `condition` applied to its hidden states.

        Args:
            config: the method's config.
            groups: the weighted words and their token positions (the same in both SDXL tokenizers).
            text: the prompt's condition (`embeds` `(1, L, D)`, SDXL's `pooled` `(1, P)` and encoder `widths`).
            encode: the pipeline's text encoding of another plain text (e.g. `""`), for reference embeddings.
        """
        embeds = self.condition(config, groups, text.embeds)
        return text if embeds is text.embeds else replace(text, embeds=embeds)

    def prepare(self, config, inputs: MethodInputs) -> Plan:
        """The hooks of one sampling run (none by default)."""
        return Plan()


REGISTRY: dict[str, Method] = {}  # name -> method, filled as the modules of `MODULES` are imported


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add one instance of a method class to `REGISTRY` under its `name` (which must have its
    line in `emphasize.methods.MODULES`, the index the torch-free CLI reads)."""
    from emphasize.methods import MODULES

    if MODULES.get(cls.name) not in (cls.__module__, cls.__module__.removeprefix("emphasize.methods.")):
        raise ValueError(f"method {cls.name!r} needs its line in emphasize.methods.MODULES")
    if cls.name in REGISTRY and type(REGISTRY[cls.name]) is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice")
    if not is_dataclass(cls.config_class):
        raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
    REGISTRY[cls.name] = cls()
    return cls


def method_names(task: str | None = None, *, initial_latent: bool | None = None) -> tuple[str, ...]:
    """Method names in `MODULES` order, optionally those that run on `task` ("t2i" or "edit") and those that do
    (True) or do not (False) optimize the initial latent."""
    registry = load_registry()
    return tuple(
        name
        for name, m in registry.items()
        if (task is None or task in m.tasks) and (initial_latent is None or m.initial_latent == initial_latent)
    )


def load_registry() -> dict[str, Method]:
    """`REGISTRY` with every module of `MODULES` imported, in `MODULES` order."""
    from emphasize.methods import MODULES

    for module in dict.fromkeys(MODULES.values()):  # a bare name is a module of this package, else a dotted path
        importlib.import_module(module if "." in module else f"emphasize.methods.{module}")
    missing = [name for name in MODULES if name not in REGISTRY]
    if missing:
        raise RuntimeError(f"methods {', '.join(missing)} are in MODULES but their modules register nothing")
    return {name: REGISTRY[name] for name in MODULES}


def get_method(name: str, task: str | None = None) -> Method:
    """The registered method `name` (ValueError naming the valid ones when unknown or not for `task`)."""
    valid = method_names(task)
    if name not in valid:
        what = f" for {task}" if task is not None and name in load_registry() else ""
        raise ValueError(f"unknown method {name!r}{what}; choose one of {', '.join(valid)}")
    return REGISTRY[name]


def method_config(name: str, config=None, task: str | None = None):
    """Validate the method name and return its config (the default one when None).

    Args:
        name: a registered method.
        config: an instance of its `config_class`, or None for the defaults.
        task: "t2i" or "edit" to also check the method runs there.
    """
    expected = get_method(name, task).config_class
    if config is None:
        return expected()
    if not isinstance(config, expected):
        raise ValueError(f"method {name!r} takes a {expected.__name__}, got {type(config).__name__}")
    return config


def config_fields(name: str) -> list[tuple[str, type | str, Any]]:
    """(field, type, default) of a method's config, nested configs flattened as `outer.inner` (for CLIs/UIs)."""
    out: list[tuple[str, type | str, Any]] = []

    def walk(prefix: str, instance) -> None:
        for f in fields(instance):
            value = getattr(instance, f.name)
            if is_dataclass(value):
                walk(f"{prefix}{f.name}.", value)
            else:
                out.append((prefix + f.name, f.type, value))

    walk("", get_method(name).config_class())
    return out


def guidance_plan(
    config, inputs: MethodInputs, groups: list[tuple[int, ...]], weights: torch.Tensor, refine: list[int] | None
) -> Plan:
    """The plan of a latent-updating attention method (A&E, DynamicImportance): capture, frozen UNet, and the
    pre-step hook that moves z_t along the gradient of the config's `objective` loss on `groups`.

    Args:
        config: a config with `objective`, `loss`, `schedule` and `attention_factor`.
        inputs: the run's inputs.
        groups: token groups the loss sees; `weights` `(G,)` their weights.
        refine: groups whose peaks must reach the refinement thresholds (None: all).
    """
    controller = AttentionController()
    factor = config.attention_factor if config.attention_factor is not None else inputs.card_attention_factor
    pre_step = attention_guidance(
        inputs.pipe.unet,
        inputs.pipe.scheduler,
        inputs.batch,
        controller,
        groups=groups,
        weights=weights,
        loss_fn=LOSSES[config.objective],
        loss_config=config.loss,
        schedule=config.schedule,
        attention_factor=factor,
        num_tokens=inputs.num_tokens,
        steps=inputs.steps,
        latent_hw=inputs.latent_hw,
        refine_groups=refine,
        diagnostics=inputs.diagnostics,
    )
    return Plan(controller=controller, pre_step=pre_step, freeze_unet=True)


def check_objective(objective: str) -> None:
    """ValueError unless `objective` names a registered attention loss (`losses.LOSSES`)."""
    if objective not in LOSSES:
        raise ValueError(f"objective={objective!r} is not a registered loss; choose one of {', '.join(LOSSES)}")
