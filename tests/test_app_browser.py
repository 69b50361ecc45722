"""The app end to end in a real browser: Debian's chromium driven by Playwright, against the app served on a free
port of 127.0.0.1 over the embedded models. Saves a screenshot of each tab to docs/ (used by the README) when
EMPHASIZE_SCREENSHOTS=1."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("EMPHASIZE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[1] / "docs"
TIMEOUT = 120_000  # ms for a job to show its result on a busy CPU

if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no chromium at {CHROMIUM} (scripts/setup.sh installs Debian's chromium; EMPHASIZE_CHROMIUM names another)",
        allow_module_level=True,
    )
pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the app extra is not installed: pip install -e '.[app]'")
sync_api.expect.set_options(timeout=TIMEOUT)  # a busy CPU can be slow to answer even the cheap slider updates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    import torch

    from emphasize.app.handlers import ModelSession
    from emphasize.app.server import ServerConfig, launch

    torch.set_num_threads(1)
    session = ModelSession(workdir=tmp_path_factory.mktemp("app-browser"))
    session.warm(("t2i", "edit"))
    demo, address = launch(session, ServerConfig(port=_free_port()), block=False, quiet=True)
    assert address.startswith("http://127.0.0.1:")
    yield address
    demo.close()
    session.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield instance
        instance.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.wait_for_selector("#t2i-slider-0", state="visible")
    yield page
    context.close()


def _screenshot(page, name: str) -> None:
    """A small PNG of the whole page: downscaled and palette-quantised."""
    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    image = image.resize((image.width * 2 // 3, image.height * 2 // 3), Image.Resampling.LANCZOS)
    # the README's screenshots: written to docs/ only when asked (EMPHASIZE_SCREENSHOTS=1), so a test run leaves
    # the tree clean; otherwise to a temporary folder (the page is still rendered and encoded)
    folder = DOCS if os.environ.get("EMPHASIZE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir())
    folder.mkdir(exist_ok=True)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(folder / name, optimize=True)


def _set_number(page, selector: str, value) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _choose(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _wait_for_status_change(page, selector: str, before: str) -> str:
    """Wait until the job's status line is a finished job's (no progress overlay) other than `before`."""
    locator = page.locator(selector)
    other = f"(?!{re.escape(before)}\\s*$)" if before else ""
    done = re.compile(rf"^\s*{other}plain and [^|]*: \d+\.\d+ s(?: \(plain from the cache\))?\s*$")
    sync_api.expect(locator).to_have_text(done, timeout=TIMEOUT)
    return locator.inner_text().strip()


def test_text_to_image_sliders_generate_and_parse_error(page):
    prompt = page.locator("#t2i-prompt textarea")
    prompt.fill("a (red:1.5) circle and a (blue:0.8) square")
    sync_api.expect(page.locator("#t2i-slider-0 [data-testid=block-info]")).to_have_text("red")
    sync_api.expect(page.locator("#t2i-slider-2 [data-testid=block-info]")).to_have_text("blue")
    sync_api.expect(page.locator("#t2i-slider-1 [data-testid=block-info]")).to_have_text("circle")
    sync_api.expect(page.locator("#t2i-slider-0 input[type=number]")).to_have_value("1.5")

    _set_number(page, "#t2i-slider-0", 2.5)  # a typed slider value rewrites the prompt
    sync_api.expect(prompt).to_have_value("a (red:2.5) circle and a (blue:0.8) square")
    track = page.locator("#t2i-slider-1 input[type=range]").bounding_box()  # dragging marks an unmarked word
    page.mouse.click(track["x"] + track["width"] * 0.8, track["y"] + track["height"] / 2)
    sync_api.expect(prompt).to_have_value(re.compile(r"a \(red:2\.5\) \(circle:2\.\d+\) and a \(blue:0\.8\) square"))

    _choose(page, "#t2i-method", "reweight")
    _set_number(page, "#t2i-steps", 4)
    page.locator("#t2i-generate").click()
    status = _wait_for_status_change(page, "#t2i-status", "")
    for image in ("#t2i-plain", "#t2i-method-image", "#t2i-chart"):
        sync_api.expect(page.locator(f"{image} img")).to_be_visible()
    sync_api.expect(page.locator("#t2i-heatmaps img")).to_have_count(6)  # plain and method, three words
    shares = page.locator("#t2i-shares").inner_text()
    assert "reweight" in shares and "red" in shares

    _set_number(page, "#t2i-slider-0", 0.3)  # a lighter word: its attention share drops, plain is cached
    sync_api.expect(prompt).to_have_value(re.compile(r"^a \(red:0\.3\)"))
    page.locator("#t2i-generate").click()
    status = _wait_for_status_change(page, "#t2i-status", status)
    assert "plain from the cache" in status
    sync_api.expect(page.locator("#t2i-shares")).not_to_have_text(shares)
    red_before = re.search(r"red\s+2\.5\s+[\d.]+%\s+([\d.]+)%", shares).group(1)
    red_after = re.search(r"red\s+0\.3\s+[\d.]+%\s+([\d.]+)%", page.locator("#t2i-shares").inner_text()).group(1)
    assert float(red_after) < float(red_before)

    page.locator("#t2i-sweep").click()  # the sweep word defaults to the first marked word
    sync_api.expect(page.locator("#t2i-sweep-gallery img")).to_have_count(5)
    _screenshot(page, "app_t2i.png")

    prompt.fill("a (red circle")
    error = page.locator("#t2i-prompt-error")
    sync_api.expect(error).to_contain_text("unbalanced '(' at column 3")
    prompt.fill("a (red:1.2) circle")
    sync_api.expect(error).to_be_hidden()


def test_edit_tab(page, tmp_path):
    from PIL import Image

    source = tmp_path / "input.png"
    image = Image.new("RGB", (64, 64), (235, 235, 235))
    image.paste((200, 30, 30), (16, 16, 40, 40))
    image.save(source)
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-upload input[type=file]").set_input_files(str(source))
    instruction = page.locator("#edit-prompt textarea")
    instruction.fill("make the (square:2) green")
    sync_api.expect(page.locator("#edit-slider-1 [data-testid=block-info]")).to_have_text("square")
    _choose(page, "#edit-method", "embed")
    _set_number(page, "#edit-steps", 4)
    page.locator("#edit-run").click()
    _wait_for_status_change(page, "#edit-status", "")
    for selector in ("#edit-input", "#edit-plain", "#edit-method-image", "#edit-chart"):
        sync_api.expect(page.locator(f"{selector} img")).to_be_visible()
    sync_api.expect(page.locator("#edit-heatmaps img")).to_have_count(2)
    _screenshot(page, "app_edit.png")


def test_sgool_tab(page):
    page.get_by_role("tab", name="SGOOL / DOODL").click()
    page.locator("#sgool-prompt textarea").fill("a red circle")
    for name, value in (("optimization-steps", 3), ("sampling-steps", 3)):
        box = page.locator(f"#sgool-knob-sgool-{name} input")
        box.fill(str(value))
    page.locator("#sgool-run").click()
    status = page.locator("#sgool-status")
    sync_api.expect(status).to_contain_text("best loss", timeout=TIMEOUT)
    assert "3 steps" in status.inner_text()
    for selector in ("#sgool-plain", "#sgool-result", "#sgool-saliency-figure"):
        sync_api.expect(page.locator(f"{selector} img")).to_be_visible()
    sync_api.expect(page.locator("#sgool-losses")).to_contain_text("loss")
    _screenshot(page, "app_sgool.png")
