"""Memory and time of one SGOOL optimisation step: constant-memory EDICT backprop vs plain autograd.

    .venv/bin/python benchmarks/bench_sgool.py                     # tiny model, 10 and 50 sampling steps
    .venv/bin/python benchmarks/bench_sgool.py --steps 10 25 50 --threads 2

What one step is: `optimize_initial_latent(..., SGOOLConfig(optimization_steps=1))` on the tiny random-weight
Stable Diffusion pipeline (`emphasize.models.tiny`, 64x64 images, 32x32 latents), the tiny CLIP
(`emphasize.models.tiny_clip`) and the spectral-residual saliency detector: EDICT sampling of the tied latent,
decoding of the pair, saliency and salient crops, CLIP loss, gradient through the whole chain, DOODL update (the
call also evaluates the updated latent once, without a graph). `ours` backpropagates by exact inversion
(`edict_sample_with_grad`); `naive` is plain autograd through the chain (`constant_memory=False`).

How memory is measured (CPU, so no allocator statistics): every configuration runs in a fresh child process with
`MALLOC_MMAP_THRESHOLD_=65536`, so every tensor buffer above 64 KiB is its own mmap and is returned to the OS when
freed; resident memory then follows live tensor memory. The child builds the models, runs the same call once
without optimisation steps (a no-grad evaluation: lazy initialisation, forward working set), collects garbage,
calls `malloc_trim(0)` and reads the resident set size (RSS) as the baseline. A thread samples RSS every 2 ms
during the measured step; **peak RSS delta** = highest sample - baseline, i.e. what the gradient step adds on top
of the models and a no-grad pass. As a second, exact measure the step is run again under
`emphasize.sgool.memory.SavedTensorMeter`: **saved bytes** = peak bytes of distinct storages held by autograd
(saved-tensor hooks), model weights excluded: the activation memory of backprop.

How time is measured: CPU time (`time.process_time`, so other processes on a shared machine do not distort it) of
one optimisation step (sampling, loss, gradient, update) = a call with one optimisation step minus a call with none
(both end with the same no-grad evaluation), against one plain DDIM sampling pass of the same length (the
pipeline's own `__call__` with its DDIM scheduler, CFG 7.5, VAE decode; best of 2 after a warm-up), in the same
child process, with `--threads` intra-op threads. Wall times are printed beside them. "EDICT pass" is the no-grad
evaluation (EDICT sampling, decode, saliency, CLIP loss) for reference: EDICT needs two CFG noise predictions per
step where DDIM needs one.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time

PROMPT = "a red circle left of a blue square"


def _rss() -> int:
    """Current resident set size in bytes (Linux /proc, no dependency)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakSampler:
    """Samples RSS in a background thread every `interval` seconds and keeps the highest value."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, _rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def child(method: str, steps: int, threads: int, seed: int) -> dict:
    """Measure one configuration in this (fresh) process; returns a JSON-able dict."""
    import torch

    from emphasize.models.tiny import tiny_pipeline
    from emphasize.models.tiny_clip import tiny_clip
    from emphasize.saliency import SpectralResidualDetector
    from emphasize.sgool import SGOOLConfig, optimize_initial_latent
    from emphasize.sgool.memory import SavedTensorMeter

    torch.set_num_threads(threads)
    pipe = tiny_pipeline()
    clip_model, clip_tokenizer = tiny_clip()
    detector = SpectralResidualDetector()
    config = SGOOLConfig(optimization_steps=1, sampling_steps=steps, constant_memory=method == "ours")

    def step(optimization_steps: int = 1):
        generator = torch.Generator().manual_seed(seed)
        cfg = SGOOLConfig(**{**config.__dict__, "optimization_steps": optimization_steps})
        return optimize_initial_latent(pipe, PROMPT, clip_model, clip_tokenizer, detector, cfg, generator=generator)

    # 1. warm-up: one no-grad evaluation; then release freed memory and take the baseline
    step(optimization_steps=0)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    baseline = _rss()

    # 2. the measured step: RSS peak (sampled) and activation bytes held by autograd (weights excluded)
    weights = [*pipe.unet.parameters(), *pipe.vae.parameters(), *clip_model.parameters()]
    with _PeakSampler() as sampler, SavedTensorMeter(exclude=weights) as meter:
        result = step()

    # 3. time of one optimisation step: CPU time of a 1-step call minus a 0-step call (both end with one no-grad
    # evaluation), immune to other processes on the machine; wall time of the step from the report
    def timed(optimization_steps: int):
        tick = time.process_time()
        out = step(optimization_steps)
        return time.process_time() - tick, out

    edict_cpu, _ = timed(0)
    total_cpu, timed_result = timed(1)
    step_cpu = total_cpu - edict_cpu

    # 4. one plain DDIM sampling pass of the same length (pipeline __call__), best of 2 after a warm-up
    def ddim() -> tuple[float, float]:
        generator = torch.Generator().manual_seed(seed)
        tick, wall = time.process_time(), time.perf_counter()
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, generator=generator, output_type="pt")
        return time.process_time() - tick, time.perf_counter() - wall

    pipe.set_progress_bar_config(disable=True)
    ddim()
    ddim_cpu, ddim_wall = (min(pair) for pair in zip(ddim(), ddim(), strict=True))
    return dict(
        method=method,
        steps=steps,
        peak_rss_delta=sampler.peak - baseline,
        saved_bytes=meter.peak_bytes,
        step_cpu=step_cpu,
        step_wall=timed_result.report.step_seconds[0],
        edict_cpu=edict_cpu,
        ddim_cpu=ddim_cpu,
        ddim_wall=ddim_wall,
        loss=result.report.losses[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50], help="sampling steps to compare")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per child process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads, args.seed)))
        return

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    rows = {}
    for method in ("ours", "naive"):
        for steps in args.steps:
            command = [sys.executable, __file__, "--child", method, str(steps), "--threads", str(args.threads)]
            command += ["--seed", str(args.seed)]
            tick = time.perf_counter()
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            rows[method, steps] = json.loads(out.strip().splitlines()[-1])
            print(f"measured {method:5s} at {steps:3d} steps in {time.perf_counter() - tick:6.1f} s", file=sys.stderr)

    mib = 2**20
    print(f"one SGOOL optimisation step, tiny model, {args.threads} thread(s); times are CPU seconds (wall in [])")
    print("method  steps  peak RSS delta  saved bytes      step time        DDIM pass   step/DDIM  EDICT pass/DDIM")
    for (method, steps), r in rows.items():
        print(
            f"{method:6s}  {steps:5d}  {r['peak_rss_delta'] / mib:10.1f} MiB  {r['saved_bytes'] / mib:7.1f} MiB"
            f"  {r['step_cpu']:6.2f} [{r['step_wall']:6.2f}] s  {r['ddim_cpu']:5.2f} [{r['ddim_wall']:5.2f}] s"
            f"  {r['step_cpu'] / r['ddim_cpu']:8.2f}x  {r['edict_cpu'] / r['ddim_cpu']:14.2f}x"
        )
    lo, hi = min(args.steps), max(args.steps)
    for key, label in (("peak_rss_delta", "peak RSS delta"), ("saved_bytes", "saved bytes")):
        ours = rows["ours", hi][key] / max(rows["ours", lo][key], 1)
        naive = rows["naive", hi][key] / max(rows["naive", lo][key], 1)
        print(f"{label} ratio {hi}/{lo} steps: ours {ours:.2f}x (target <= 1.2x), naive {naive:.2f}x")
    for steps in args.steps:
        ours = rows["ours", steps]["step_cpu"] / rows["ours", steps]["ddim_cpu"]
        naive = rows["naive", steps]["step_cpu"] / rows["naive", steps]["ddim_cpu"]
        print(f"optimisation step / DDIM pass (CPU time) at {steps} steps: ours {ours:.2f}x (target <= 4x), ", end="")
        print(f"naive {naive:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(r) for r in rows.values()], f, indent=1)


if __name__ == "__main__":
    main()
