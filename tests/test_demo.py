"""The first-run demo on a tiny model: the grid with the detector's verdict under every cell, the scores file,
and the choice of an illustrative prompt."""

from __future__ import annotations

import json

from PIL import Image

from emphasize.demo import choose_prompt, run_demo


def test_demo_writes_a_grid_and_scores(tmp_path, tiny_t2i):
    model = tmp_path / "model"
    tiny_t2i.save_pretrained(model)
    grid = run_demo(tmp_path / "demo", steps=2, seeds=[0, 1], prompt="a red circle and a (blue square:2)",
                    methods=("plain", "importance"), model=str(model), guidance_scale=5.0)  # fmt: skip
    scores = json.loads((tmp_path / "demo" / "demo_scores.json").read_text())
    assert len(scores["cells"]) == 4 and {c["method"] for c in scores["cells"]} == {"plain", "importance"}
    width, height = Image.open(grid).size
    assert width == 110 + 2 * 128 and height == 40 + 2 * (128 + 14)  # a verdict strip under each row of tiles


def test_choose_prompt_weights_one_object_of_a_candidate(tiny_t2i):
    tiny_t2i.set_progress_bar_config(disable=True)
    choice = choose_prompt(tiny_t2i, ["a red circle and a blue square"], [0], steps=2, guidance_scale=5.0)
    assert choice.prompt == "a red circle and a blue square" and choice.neglected in (0, 1)
    assert ":2)" in choice.weighted and len(choice.plain_recall[choice.prompt]) == 2
