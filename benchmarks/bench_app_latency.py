"""Latency of the app: a weight change to a new image pair, through the app's handler, against the same sampling
from Python.

    .venv/bin/python benchmarks/bench_app_latency.py
    .venv/bin/python benchmarks/bench_app_latency.py --method embed --steps 25 --repeats 5

On the embedded text-to-image model (its card's steps and CFG scale), with one warm `ModelSession`: the plain image
of the prompt is cached first, then each repeat moves one word's weight and times `ModelSession.text_to_image`
(the method's sampling, plain from the cache, heatmap overlays, the share chart, the PNGs with their `parameters`
chunk and the JSON report written) against `emphasize.generate` of the same prompt, method and sampling settings
(attention recorded, as the handler does). Runs are interleaved and the median of each counts; the ratio is
handler / Python. Target: <= 1.5 (no start-up cost per request).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import emphasize
from emphasize.app.handlers import ModelSession, TextToImageRequest
from emphasize.app.knobs import build_config
from emphasize.app.sliders import set_weight

TARGET = 1.5  # handler time / Python time at most


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt", default="a (red:1.5) circle and a (blue:0.8) square", help="weighted prompt")
    parser.add_argument("--method", default="importance", help="the method (default importance, the API's)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model card's)")
    parser.add_argument("--repeats", type=int, default=5, help="weight changes timed (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    session = ModelSession()
    pipe = session.pipe("t2i")
    card = session.defaults("t2i")
    steps = args.steps or int(card.get("num_inference_steps", 50))
    guidance = float(card.get("guidance_scale", 7.5))
    config = build_config(args.method, {})
    sampling = emphasize.SamplingConfig(steps=steps, guidance_scale=guidance, seed=0)

    def request(prompt: str) -> TextToImageRequest:
        return TextToImageRequest(prompt, method=args.method, steps=steps, guidance_scale=guidance, seed=0)

    first = session.text_to_image(request(args.prompt))  # loads, warms up and caches plain for this seed
    emphasize.generate(pipe, args.prompt, method=args.method, config=config, sampling=sampling)
    assert not first.plain_cached

    handler, python = [], []
    for k in range(args.repeats):
        prompt = set_weight(args.prompt, 0, 1.6 + 0.2 * k)  # a new weight each time: the method runs again

        def through_handler(prompt: str = prompt) -> None:
            tick = time.perf_counter()
            assert session.text_to_image(request(prompt)).plain_cached
            handler.append(time.perf_counter() - tick)

        def from_python(prompt: str = prompt) -> None:
            tick = time.perf_counter()
            emphasize.generate(pipe, prompt, method=args.method, config=config, sampling=sampling)
            python.append(time.perf_counter() - tick)

        for run in (through_handler, from_python) if k % 2 == 0 else (from_python, through_handler):
            run()  # the order alternates, so neither side always runs first
    session.close()

    h, p = statistics.median(handler), statistics.median(python)
    ratio = h / p
    print(f"embedded world model, {args.method}, {steps} steps, CFG {guidance:g}, {args.threads} thread(s)")
    print(f"weight change -> image pair through the handler (plain cached): median {h:.3f} s of {args.repeats}")
    print(f"the same sampling from Python (emphasize.generate):             median {p:.3f} s of {args.repeats}")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"ratio handler / Python: {ratio:.2f}x (target <= {TARGET}x: {verdict})")
    return ratio


if __name__ == "__main__":
    main()
