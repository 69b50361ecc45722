"""`emphasize bench speed`: wall time and peak memory of plain sampling, `importance`, our `attend-excite` and
diffusers' deprecated `StableDiffusionAttendAndExcitePipeline`, in one process and one run, on the same model,
prompt, seed and step count; prints the table and the ratios the project targets.

Time is both wall-clock and the process's CPU time (`time.process_time`, all threads): on a shared machine the CPU
time is what other processes disturb least, so the ratios use it on CPU (wall time on CUDA). Each method runs
`repeats` times, interleaved, and its fastest run counts. Peak memory is the peak resident set size above the
level just before each method, sampled every 2 ms from `/proc/self/statm` by a background thread (CPU tensors
live in process memory; on CUDA `torch.cuda.max_memory_allocated` is used instead). Methods run after one
warm-up call, in a fixed order.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import torch

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Context manager: peak RSS (or CUDA allocated bytes) above the level at entry, in bytes."""

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device, self.interval, self.peak = device, interval, 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self._stop = _rss(), threading.Event()
        self.peak_abs = self.base

        def watch() -> None:
            while not self._stop.is_set():
                self.peak_abs = max(self.peak_abs, _rss())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak_abs, _rss()) - self.base


def _measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float, int]:
    with PeakMemory(device) as mem:
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu, mem.peak


def run_speed_benchmark(
    model: str,
    prompt: str,
    *,
    steps: int = 10,
    size: int | None = None,
    seed: int = 0,
    repeats: int = 2,
    threads: int | None = 1,
    json_path: str | None = None,
) -> list[dict]:
    """Run the four methods and print wall time, peak memory and ratios.

    Args:
        model: a text-to-image model (diffusers dir, cached hub id or checkpoint file).
        prompt: weighted prompt; its marked words are the subject tokens of both A&E implementations.
        steps: sampling steps for every method.
        size: square image size in px (the model's default when None).
        seed: seed of the shared initial noise.
        repeats: runs per method (interleaved); the fastest counts.
        threads: torch CPU threads for every method (None leaves torch's default).
        json_path: also write the rows as JSON (atomically).
    """
    from diffusers import StableDiffusionAttendAndExcitePipeline

    from emphasize import api
    from emphasize.attention import capture_attention, resolve_attention_size
    from emphasize.config import AttendExciteConfig, ImportanceConfig, SamplingConfig
    from emphasize.models.load import load_pipeline
    from emphasize.prompts import parse_prompt
    from emphasize.sampling.common import latent_size, vae_scale_factor
    from emphasize.tokens import align_spans

    if threads is not None:
        torch.set_num_threads(threads)
    pipe = load_pipeline(model, "t2i")
    device = pipe.unet.device
    size = size or pipe.unet.config.sample_size * vae_scale_factor(pipe.vae)
    sampling = SamplingConfig(steps=steps, height=size, width=size, seed=seed)
    weighted = parse_prompt(prompt)
    groups = align_spans(pipe.tokenizer, weighted)
    if not groups:
        raise ValueError(f"benchmark prompt {prompt!r} has no weighted words")
    indices = [i for g in groups for i in g.token_indices]

    # the attention level our methods optimize, given to diffusers' pipeline as attn_res
    h, w = latent_size(pipe.vae, size, size)
    with capture_attention(pipe.unet) as controller:
        controller.set_pass(rows=(0,), keep_running=True)
        with torch.no_grad():
            pipe.unet(
                torch.zeros(1, 4, h, w, device=device), 999, torch.zeros(1, 77, pipe.unet.config.cross_attention_dim)
            )
    attn_res = resolve_attention_size(controller.store.seen_pixels(), (h, w), None)

    importance = ImportanceConfig()  # first half of the steps, no refinement
    ae = AttendExciteConfig()
    ae_no_refine = replace(ae, schedule=replace(ae.schedule, thresholds=()))
    noise = api.initial_noise(seed, (1, 4, h, w), device, pipe.unet.dtype)
    parts = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "safety_checker", "feature_extractor")
    diffusers_ae = StableDiffusionAttendAndExcitePipeline(
        **{k: getattr(pipe, k, None) for k in parts}, requires_safety_checker=False
    )
    diffusers_ae.set_progress_bar_config(disable=True)

    def run_diffusers_ae() -> None:
        original = dict(pipe.unet.attn_processors)  # it installs its processors and never restores them
        try:
            diffusers_ae(
                weighted.text,
                token_indices=indices,
                height=size,
                width=size,
                num_inference_steps=steps,
                latents=noise.clone(),
                thresholds={},
                attn_res=attn_res,
                output_type="np",
            )
        finally:
            pipe.unet.set_attn_processor(original)

    runs: list[tuple[str, Callable[[], object]]] = [
        ("plain", lambda: api.generate(pipe, weighted, method="plain", sampling=sampling, record_attention=False)),
        (
            "importance",
            lambda: api.generate(pipe, weighted, config=importance, sampling=sampling, record_attention=False),
        ),
        (
            "attend-excite",
            lambda: api.generate(
                pipe, weighted, method="attend-excite", config=ae, sampling=sampling, record_attention=False
            ),
        ),
        (
            "attend-excite (thresholds {})",
            lambda: api.generate(
                pipe, weighted, method="attend-excite", config=ae_no_refine, sampling=sampling, record_attention=False
            ),
        ),
        ("diffusers A&E (thresholds {})", run_diffusers_ae),
    ]
    api.generate(pipe, weighted, sampling=replace(sampling, steps=2), record_attention=False)  # warm-up
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, fn in runs:
            seconds, cpu, peak = _measure(fn, device)
            row = dict(
                method=name, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3), peak_mb=round(peak / 2**20, 1)
            )
            if name not in best or row["cpu_seconds"] < best[name]["cpu_seconds"]:
                best[name] = {**row, "peak_mb": max(row["peak_mb"], best.get(name, row)["peak_mb"])}
    rows = [best[name] for name, _ in runs]
    by = {r["method"]: r for r in rows}
    ref = by["diffusers A&E (thresholds {})"]
    key = "seconds" if device.type == "cuda" else "cpu_seconds"
    ratios = dict(
        importance_vs_diffusers_ae_time=by["importance"]["seconds"] / ref["seconds"],
        importance_vs_plain_time=by["importance"]["seconds"] / by["plain"]["seconds"],
        importance_vs_diffusers_ae_memory=by["importance"]["peak_mb"] / max(ref["peak_mb"], 1e-9),
        ae_no_refine_vs_diffusers_ae_time=by["attend-excite (thresholds {})"]["seconds"] / ref["seconds"],
    )
    targets = dict(
        importance_vs_diffusers_ae_time=0.5, importance_vs_plain_time=2.5, importance_vs_diffusers_ae_memory=1.0
    )
    print(
        f"model={model} size={size} steps={steps} seed={seed} attn_res={attn_res} device={device} "
        f"threads={torch.get_num_threads()} repeats={repeats} ratios on {key}"
    )
    print(f"prompt={prompt!r} subject tokens={indices}")
    print(f"{'method':32s} {'wall s':>9s} {'CPU s':>9s} {'peak MB':>9s}")
    for r in rows:
        print(f"{r['method']:32s} {r['seconds']:9.2f} {r['cpu_seconds']:9.2f} {r['peak_mb']:9.1f}")
    for key, value in ratios.items():
        target = targets.get(key)
        verdict = "" if target is None else f"  (target <= {target}: {'met' if value <= target else 'MISSED'})"
        print(f"{key:40s} {value:6.2f}{verdict}")
    if json_path:
        from emphasize.visualize import save_atomic

        payload = dict(model=model, size=size, steps=steps, seed=seed, repeats=repeats, rows=rows, ratios=ratios)
        save_atomic(json_path, lambda tmp: open(tmp, "w").write(json.dumps(payload, indent=2)))
    return rows
