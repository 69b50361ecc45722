"""The CLI end to end on saved tiny model directories (save_pretrained, then --model DIR)."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from emphasize import cli


@pytest.fixture(scope="module")
def t2i_dir(tmp_path_factory, tiny_t2i):
    path = tmp_path_factory.mktemp("tiny-t2i")
    tiny_t2i.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def edit_dir(tmp_path_factory, tiny_edit):
    path = tmp_path_factory.mktemp("tiny-edit")
    tiny_edit.save_pretrained(path)
    return str(path)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_imports_no_heavy_modules():
    code = (
        "import sys\nfrom emphasize import cli\ncli.build_parser().format_help()\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules]\nprint(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_generate_writes_image_report_and_attention(capsys, tmp_path, t2i_dir):
    out, report, attention = tmp_path / "a.png", tmp_path / "a.json", tmp_path / "att.png"
    code, stdout, err = run(
        capsys,
        "generate",
        "a (red:2) circle and a [blue square]",
        "--model",
        t2i_dir,
        "--steps",
        "4",
        "--seed",
        "7",
        "--out",
        str(out),
        "--report",
        str(report),
        "--save-attention",
        str(attention),
        "--quiet",
    )
    assert code == 0, err
    image = Image.open(out)
    assert image.size == (64, 64)
    params = image.info["parameters"]
    assert params.startswith("a (red:2) circle and a [blue square]\n")
    assert "Steps: 4" in params and "Seed: 7" in params and "Emphasize method: importance" in params
    rep = json.loads(report.read_text())
    assert rep["method"] == "importance" and rep["seed"] == 7 and rep["steps"] == 4 and rep["seconds"] > 0
    assert [(w["text"], w["tokens"]) for w in rep["words"]] == [("red", [2]), ("blue square", [6, 7])]
    assert all(0 <= w["attention_share"] <= 1 for w in rep["words"])
    assert Image.open(attention).size[0] > 2 * 64


@pytest.mark.parametrize("rule", ["ip2p", "instructdiffusion"])
def test_edit_end_to_end(capsys, tmp_path, edit_dir, rule):
    src = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(src)
    out = tmp_path / "out.png"
    code, _, err = run(
        capsys,
        "edit",
        str(src),
        "make the (circle:2) green",
        "--model",
        edit_dir,
        "--steps",
        "3",
        "--guidance-rule",
        rule,
        "--out",
        str(out),
        "--report",
        str(tmp_path / "r.json"),
        "--quiet",
    )
    assert code == 0, err
    assert f"Guidance rule: {rule}" in Image.open(out).info["parameters"]
    assert json.loads((tmp_path / "r.json").read_text())["guidance_rule"] == rule


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a (red:2 circle"], "unbalanced '(' at column 3"),
        (["generate", "a (red:nan) circle"], "column"),
        (["generate", "a red circle " * 30 + "(blue:2)"], "cut off by the 77-token limit"),
        (["generate", "a (red:2) circle", "--height", "66"], "--height 66 must be a multiple of 4"),
        (["generate", "a (red:2) circle", "--attention-factor", "4"], "no cross-attention at downsampling factor 4"),
        (["generate", "a red circle", "--method", "attend-excite"], "at least one marked word"),
        (["generate", "a red circle", "--save-attention", "x.png"], "needs at least one weighted word"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_file(capsys, tmp_path, t2i_dir, argv, message):
    out = tmp_path / "never.png"
    code, _, err = run(capsys, *argv, "--model", t2i_dir, "--steps", "2", "--out", str(out), "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("emphasize: error:") and message in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flag", "size"), [((), (70, 66)), (("--keep-working-size",), (64, 60))])
def test_edit_writes_the_input_size_unless_asked(capsys, tmp_path, edit_dir, flag, size):
    src = tmp_path / "in.png"
    Image.new("RGB", (70, 66), (200, 30, 30)).save(src)
    out = tmp_path / "out.png"
    args = ["edit", str(src), "make it green", "--model", edit_dir, "--steps", "2", "--method", "plain"]
    code, _, err = run(capsys, *args, "--out", str(out), "--quiet", *flag)
    assert code == 0, err
    assert Image.open(out).size == size


def test_bad_model_and_image_paths(capsys, tmp_path, edit_dir):
    code, _, err = run(
        capsys, "generate", "a cat", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")
    )
    assert code == 2 and "no such file or directory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "generate", "a cat", "--model", str(tmp_path / "empty"))
    assert code == 2 and "model_index.json" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "edit", str(bad), "make it red", "--model", edit_dir)
    assert code == 2 and "cannot read image" in err
    code, _, err = run(capsys, "generate", "a cat", "--out", str(tmp_path / "x.jpg"))
    assert code == 2 and "must end in .png" in err


def test_edit_model_must_be_8_channel(capsys, tmp_path, t2i_dir):
    src = tmp_path / "in.png"
    Image.new("RGB", (64, 64)).save(src)
    code, _, err = run(capsys, "edit", str(src), "make it red", "--model", t2i_dir, "--out", str(tmp_path / "o.png"))
    assert code == 2 and "channel" in err


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from emphasize.models.tiny_clip import tiny_clip

    path = tmp_path_factory.mktemp("tiny-clip")
    model, tokenizer = tiny_clip()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("method, saliency", [("sgool", "attention"), ("doodl", "spectral")])
def test_saliency_methods_end_to_end(capsys, tmp_path, t2i_dir, clip_dir, method, saliency):
    out, report, figure = tmp_path / "s.png", tmp_path / "s.json", tmp_path / "sal.png"
    extra = ["--save-saliency", str(figure)] if method == "sgool" else []
    code, _, err = run(
        capsys,
        "generate",
        "a red circle and a blue square",
        "--model",
        t2i_dir,
        "--method",
        method,
        "--clip",
        clip_dir,
        "--saliency",
        saliency,
        "--steps",
        "2",
        "--opt-steps",
        "1",
        "--out",
        str(out),
        "--report",
        str(report),
        *extra,
    )
    assert code == 0, err
    rep = json.loads(report.read_text())
    assert rep["method"] == method and len(rep["optimization"]["losses"]) == 2  # initial + after one update
    assert "Emphasize method: " + method in Image.open(out).info["parameters"]
    if method == "sgool":
        assert rep["saliency"] == "attention" and len(rep["optimization"]["boxes"]) >= 1
        assert figure.exists()


def test_missing_transalnet_checkpoint_fails_before_loading(capsys, tmp_path, t2i_dir, clip_dir):
    code, _, err = run(
        capsys,
        "generate",
        "a red circle",
        "--model",
        t2i_dir,
        "--method",
        "sgool",
        "--clip",
        clip_dir,
        "--saliency",
        f"transalnet:{tmp_path / 'TranSalNet_Res.pth'}",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert code == 2 and "TranSalNet checkpoint not found" in err and not (tmp_path / "x.png").exists()
