"""The method registry: one module per method, one index line each; the API, CLI, demo and benchmarks read it, and
a method added from outside the package runs through `emphasize.generate` with no edit to the sampler or API."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

import emphasize
from emphasize.config import SamplingConfig
from emphasize.methods import MODULES
from emphasize.methods.base import REGISTRY, Method, config_fields, get_method, method_config, method_names, register

FAST = SamplingConfig(steps=2, height=64, width=64, seed=3)


def test_every_indexed_method_is_registered_with_a_frozen_config_that_has_defaults():
    assert method_names() == tuple(MODULES)
    for name in MODULES:
        method = get_method(name)
        assert method.name == name and isinstance(method, Method)
        assert dataclasses.is_dataclass(method.config_class) and method.config_class.__dataclass_params__.frozen
        method.config_class()  # every knob has a default
    assert method_names("edit") == ("plain", "attend-excite", "importance", "reweight", "embed")
    assert method_names(initial_latent=True) == ("sgool", "doodl")


def test_unknown_and_misplaced_methods_are_named():
    with pytest.raises(ValueError, match="unknown method 'magic'; choose one of plain, attend-excite"):
        get_method("magic")
    with pytest.raises(ValueError, match="unknown method 'sgool' for edit"):
        get_method("sgool", "edit")
    with pytest.raises(ValueError, match="takes a ImportanceConfig"):
        method_config("importance", get_method("embed").config_class())
    with pytest.raises(ValueError, match="saliency_guidance.optimize"):
        emphasize.config.method_config("sgool")


def test_a_class_without_an_index_line_is_refused():
    @dataclass(frozen=True)
    class NoConfig:
        pass

    with pytest.raises(ValueError, match="needs its line in emphasize.methods.MODULES"):

        @register
        class Unlisted(Method):
            name = "unlisted"
            config_class = NoConfig


def test_config_fields_flatten_nested_configs_for_clis_and_uis():
    names = [name for name, _, _ in config_fields("importance")]
    assert "schedule.scale_factor" in names and "loss.softmax_over" in names and "objective" in names
    assert dict((n, d) for n, _, d in config_fields("attend-excite"))["subject_tokens"] == "all"


@dataclass(frozen=True)
class SilenceConfig:
    """Test method: the weighted words' embeddings multiplied by `factor`."""

    factor: float = 0.0  # what the marked tokens' embeddings are multiplied by


class Silence(Method):
    name = "silence"
    config_class = SilenceConfig

    def condition(self, config, groups, embeds):
        out = embeds.clone()
        for g in groups:
            out[:, list(g.token_indices)] *= config.factor
        return out


def test_a_plug_in_method_runs_through_generate_without_touching_the_api(tiny_t2i, monkeypatch):
    monkeypatch.setitem(MODULES, "silence", __name__)
    monkeypatch.delitem(REGISTRY, "silence", raising=False)
    register(Silence)
    try:
        assert "silence" in method_names("t2i")
        plain = emphasize.generate(tiny_t2i, "a (red:2) circle", method="plain", sampling=FAST)
        silent = emphasize.generate(tiny_t2i, "a (red:2) circle", method="silence", sampling=FAST)
        same = emphasize.generate(tiny_t2i, "a (red:2) circle", method="silence", config=SilenceConfig(1.0),
                                  sampling=FAST)  # fmt: skip
        assert silent.report["method"] == "silence" and silent.report["config"] == {"factor": 0.0}
        assert not torch.equal(plain.latents, silent.latents)
        assert torch.equal(plain.latents, same.latents)  # factor 1 is plain sampling, bit for bit
    finally:
        REGISTRY.pop("silence", None)


def test_the_cli_offers_exactly_the_registry_and_imports_no_torch_for_help():
    code = "import sys, emphasize.cli as c; print(tuple(c.METHOD_MODULES), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{tuple(MODULES)} False"


def test_the_benchmark_runner_accepts_the_registry_methods():
    from emphasize.bench.runner import QualityConfig

    assert QualityConfig("world-t2i", method_names("t2i")).methods == method_names("t2i")
    with pytest.raises(ValueError, match="'sgool' does not run on suite world-refer"):
        QualityConfig("world-refer", ("plain", "sgool"))
