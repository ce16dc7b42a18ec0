"""The web app: its pictures and input checks here, and the page itself in a real headless Chromium.

The browser tests drive Debian's /usr/bin/chromium through Playwright (never a downloaded browser); without that
binary (or the playwright package) they skip, and fail when CI is set. The README's screenshot comes from the
generation test:

    YUEFU_SCREENSHOT=docs/app.png python -m pytest tests/test_webapp.py -q -k generate
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

try:
    import gradio as gr
except ImportError:  # the web app's own dependency: required in CI, optional on a developer's machine
    if os.environ.get("CI"):
        raise
    pytest.skip("gradio is not installed (pip install gradio)", allow_module_level=True)

from yuefu.errors import InvalidArgumentError  # noqa: E402
from yuefu.server import plots  # noqa: E402
from yuefu.server.webapp import TEXT, Studio, build_app, page_settings  # noqa: E402
from yuefu.service import ModelPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SR = 32000


def tone(freq: float, seconds: float = 2.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t))[None]  # [1, T]


def plot_rows(image) -> np.ndarray:
    """Mean brightness of each pixel row of the plot area, top to bottom."""
    left, top, right, bottom = plots.plot_area(image)
    return np.asarray(image.convert("L"), dtype=np.float64)[top:bottom, left:right].mean(axis=1)


# --- pictures ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("freq", [220.0, 1000.0, 4000.0])
def test_spectrogram_of_a_tone_is_bright_at_its_frequency(freq):
    values, row_hz = plots.spectrogram(tone(freq), SR)
    expected = int(np.argmin(np.abs(row_hz - freq)))
    assert abs(int(values.mean(axis=1).argmax()) - expected) <= 1
    image = plots.spectrogram_image(tone(freq), SR)
    rows = plot_rows(image)
    height = len(rows)
    expected_y = height - (expected + 0.5) / len(row_hz) * height  # row 0 is drawn at the bottom
    assert abs(int(rows.argmax()) - expected_y) <= height / len(row_hz) * 2 + 1


def test_chroma_of_a440_lights_a():
    chroma = plots.chromagram(tone(440.0), SR)
    assert chroma.shape[0] == 12
    assert plots.PITCH_CLASSES[int(chroma.mean(axis=1).argmax())] == "A"
    rows = plot_rows(plots.chroma_image(tone(440.0), SR))
    centres = [rows[int((band + 0.5) * len(rows) / 12)] for band in range(12)]  # from the top: B, A#, A, ...
    assert plots.PITCH_CLASSES[11 - int(np.argmax(centres))] == "A"


def test_pictures_of_silence_and_of_stereo_batches():
    for image in (plots.spectrogram_image(torch.zeros(1, 1, 100), SR), plots.chroma_image(torch.zeros(0), SR)):
        assert image.mode == "RGB" and image.width > 100
    stereo = torch.cat([tone(440.0), tone(440.0)])[None]  # [1, 2, T]
    assert plots.spectrogram_image(stereo, SR).size == plots.spectrogram_image(tone(440.0), SR).size


# --- input checks without a browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def studio(hf_dir, tmp_path_factory):
    pool = ModelPool()
    return Studio(pool, [str(hf_dir)], max_duration=10.0, max_upload_mb=0.05, max_upload_seconds=3.0,
                  workdir=tmp_path_factory.mktemp("webapp"), streaming=False)


def form(default_model: str, **changes):
    values = dict(prompt="rock", unconditional=False, model=default_model, duration=1.0, melody=None, continuation=None,
                  use_sampling=True, top_k=250, top_p=0.0, temperature=1.0, cfg_coef=3.0, extend_stride=18.0,
                  seed=None, random_seed=True, lang="en")
    values.update(changes)
    return values


def test_bad_input_is_a_one_line_message(studio, hf_dir, tmp_path):
    model = str(hf_dir)
    cases = [(dict(prompt="  "), "Type a prompt"), (dict(prompt="", lang="zh"), "请输入提示词"),
             (dict(duration=100.0), "duration must be in (0, 10]"), (dict(model="other/model"), "not offered"),
             (dict(top_p=2.0), "top_p"), (dict(prompt="x" * 1001), "longer than 1000")]
    long_clip, big_clip = tmp_path / "long.wav", tmp_path / "big.wav"
    sf.write(long_clip, np.zeros(2000 * 4, dtype=np.float32), 2000)  # 4 s > 3 s, 16 KB
    sf.write(big_clip, np.zeros(SR * 2, dtype=np.float32), SR)  # 2 s, 128 KB > 0.05 MB
    cases += [(dict(melody=str(big_clip)), "limited to 0.05 MB"),
              (dict(continuation=str(long_clip), duration=5.0), "limited to 3 s")]
    for changes, expected in cases:
        with pytest.raises(InvalidArgumentError) as info:
            studio.build_request(**form(model, **changes))
        assert expected in str(info.value) and "\n" not in str(info.value)
    request = studio.build_request(**form(model, prompt=" 国风 ", seed=7, random_seed=False))
    assert request.prompts == ["国风"] and request.seed == 7
    assert studio.build_request(**form(model, prompt="rock", unconditional=True)).prompts == [None]


def test_generate_handler_reports_errors_and_results(studio, hf_dir):
    args = form(str(hf_dir), prompt="")
    with pytest.raises(gr.Error, match="Type a prompt"):
        list(studio.run(**args, stream_on=False, history=[]))
    outputs = list(studio.run(**form(str(hf_dir), prompt="国风 rock", seed=3, random_seed=False), stream_on=False,
                              history=[]))
    final = outputs[-1]
    item = final[-1]
    data, sr = sf.read(final[1])
    assert sr == SR and len(data) == SR and item.request["seed"] == 3
    assert "Seed 3" in final[3] and "Chinese" in final[3]  # the prompt used, translated
    assert "left out" not in final[3]
    assert len(final[6]) == 1 and final[7].iloc[0, 1] == "国风 rock"
    # Words the normaliser cannot read are named under the prompt used, in the page's language, and in the sidecar.
    final = list(studio.run(**form(str(hf_dir), prompt="国风摇滚，窝在家里", lang="zh"), stream_on=False,
                            history=[]))[-1]
    assert "未能理解、已略去：窝" in final[3] and "Chinese" in final[3]
    assert studio.details(final[-1], "en").count("Not understood, left out: 窝\n") == 1
    assert json.loads(Path(final[-1].sidecar).read_text(encoding="utf-8"))["prompt_left_out"] == ["窝"]


def test_continuing_an_upload(studio, hf_dir, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.3 * np.sin(np.arange(SR // 2) * 2 * np.pi * 440 / SR).astype(np.float32), SR)  # 0.5 s
    final = list(studio.run(**form(str(hf_dir), continuation=str(clip), duration=1.5), stream_on=True,
                            history=[]))[-1]
    data, sr = sf.read(final[1])
    assert sr == SR and abs(len(data) - 1.5 * SR) <= SR * 0.05
    assert "continues clip.wav" in final[7].iloc[0, 6]
    # the downloadable sidecar names the upload as the user's file was called, not by the server's path to it
    side = json.loads(Path(final[-1].sidecar).read_text(encoding="utf-8"))
    assert side["request"]["continuation"] == "clip.wav" and len(side["continuation_sha256"]) == 64


def test_tempo_drafts_from_the_form(studio, hf_dir, monkeypatch):
    model = str(hf_dir)
    for bad in (2.5, float("inf"), float("nan"), "x"):
        with pytest.raises(InvalidArgumentError, match="tempo drafts must be a whole number"):
            studio.build_request(**form(model, tempo_drafts=bad))
    with pytest.raises(InvalidArgumentError, match="seed must be a whole number"):
        studio.build_request(**form(model, seed=float("inf"), random_seed=False))
    with pytest.raises(InvalidArgumentError, match="tempo_drafts must be an integer from 0 to 16"):
        studio.build_request(**form(model, tempo_drafts=17))
    assert studio.build_request(**form(model, tempo_drafts=3.0)).tempo_drafts == 3  # a slider sends floats
    # Drafts are whole first windows, so the page does not stream them even when asked to.
    streaming = Studio(studio.pool, [model], max_duration=10.0, workdir=studio.workdir, streaming=True)
    monkeypatch.setattr(Studio, "_stream", lambda *a, **k: pytest.fail("drafts were streamed"))
    final = list(streaming.run(**form(model, prompt="rock at 120 BPM", tempo_drafts=2, seed=4, random_seed=False),
                               stream_on=True, history=[]))[-1]
    item = final[-1]
    assert item.request["tempo_drafts"] == 2 and not item.streamed
    assert json.loads(Path(item.sidecar).read_text(encoding="utf-8"))["request"]["tempo_drafts"] == 2
    assert "2 tempo drafts" in final[7].iloc[0, 6]
    data, sr = sf.read(final[1])
    assert sr == SR and len(data) == SR


def test_every_language_labels_the_same_components():
    assert TEXT["en"].keys() == TEXT["zh"].keys()
    for key, props in TEXT["zh"].items():
        assert props.keys() == TEXT["en"][key].keys()


def test_app_py_without_a_model_says_one_is_needed(monkeypatch, capsys):
    """An installation without the built-in model: app.py needs --model and says so in one line."""
    import importlib.util

    from yuefu.checkpoints import builtin

    monkeypatch.setattr(builtin, "available", lambda: [])
    spec = importlib.util.spec_from_file_location("yuefu_app_script", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.main([]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--model" in lines[0] and "required" in lines[0]


def test_launch_binds_localhost_with_the_limits(hf_dir):
    import httpx

    from yuefu.server.webapp import launch

    port = free_port()
    demo = launch(str(hf_dir), port=port, max_duration=8.0, max_upload_mb=3.0, max_queue=5, prevent_thread_lock=True,
                  quiet=True)
    try:
        assert demo.server_name == "127.0.0.1" and demo.server_port == port
        assert demo.max_file_size == 3 * 1024 * 1024
        assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 1
        assert demo.yuefu_studio.max_duration == 8.0
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        demo.close()


# --- the page in a browser -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            reason = "the playwright package is missing (pip install playwright)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(hf_dir):
    pool = ModelPool()
    pool.get(str(hf_dir))
    demo = build_app(pool, str(hf_dir), max_duration=10.0)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **page_settings())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    page.wait_for_selector("#prompt textarea")
    yield page
    context.close()


def set_slider(page, elem_id: str, value: str) -> None:
    """Type ``value`` into a slider's number box and wait until the page holds it.

    In a clean CI run the tempo-drafts box (in an accordion just opened) read "0" again after "2" was typed; the
    cause was not reproduced here, even with the browser's CPU throttled 30x. So the value is typed again until it
    reads back the same twice, 300 ms apart; the callers then check that the server received it."""
    from playwright.sync_api import expect

    box = page.locator(f"#{elem_id} input[type=number]")
    expect(box).to_be_visible()
    for _ in range(10):
        box.fill(value)
        box.press("Enter")
        box.blur()
        page.wait_for_timeout(300)
        if box.input_value() == value:
            page.wait_for_timeout(300)
            if box.input_value() == value:
                return
    expect(box).to_have_value(value)  # fails with Playwright's account of what the box holds


def label_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} [data-testid=block-info]").first.inner_text().strip()


def test_generate_in_the_browser(page, tmp_path):
    import httpx
    from playwright.sync_api import expect

    prompt = "国风摇滚 rock with erhu"
    page.fill("#prompt textarea", prompt)
    set_slider(page, "duration", "1")
    page.click("#generate")
    player = page.locator("#result-audio audio[src]").first
    player.wait_for(state="attached", timeout=120_000)
    # The player's audio, as the browser holds it (a blob: URL made from the served file) ...
    encoded = page.evaluate("""async (el) => {
        const bytes = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
        let s = "";
        for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
        return btoa(s); }""", player.element_handle())
    data, sr = sf.read(io.BytesIO(base64.b64decode(encoded)))
    assert sr == SR and len(data) == SR  # 1 s at 32 kHz
    # ... and the download, over HTTP.
    href = page.locator("#result-audio a[download]").first.get_attribute("href")
    response = httpx.get(href, timeout=30)
    assert response.status_code == 200
    data, sr = sf.read(io.BytesIO(response.content))
    assert sr == SR and len(data) == SR
    expect(page.locator("#result-info textarea")).to_have_value(re.compile(r"Seed \d+"))
    if shutil.which("ffmpeg"):  # Gradio needs ffmpeg to stream; without it the page serves whole files only
        expect(page.locator("#result-info textarea")).to_have_value(re.compile(r"\(streamed\)"))
    expect(page.locator("#history")).to_contain_text(prompt)
    expect(page.locator("#spectrogram img")).to_have_count(1)
    expect(page.locator("#chroma img")).to_have_count(1)
    # A history row loads its settings back, with its seed (random off) so that it can be made again.
    page.fill("#prompt textarea", "something else")
    page.locator("#history [data-testid=cell-0-1]").click()
    expect(page.locator("#prompt textarea")).to_have_value(prompt)
    page.click("#advanced .label-wrap")  # the accordion renders its contents when opened
    expect(page.locator("#random-seed input")).not_to_be_checked()
    page.click("#advanced .label-wrap")
    page.mouse.move(0, 0)
    shot = Path(os.environ.get("YUEFU_SCREENSHOT") or tmp_path / "app.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let the waveform and images settle
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_tempo_drafts_in_the_browser(page):
    from playwright.sync_api import expect

    page.fill("#prompt textarea", "a reel at 126 BPM")
    set_slider(page, "duration", "1")
    page.click("#advanced .label-wrap")
    set_slider(page, "tempo-drafts", "2")
    page.click("#generate")
    expect(page.locator("#history")).to_contain_text("2 tempo drafts", timeout=120_000)
    expect(page.locator("#result-info textarea")).not_to_have_value(re.compile(r"\(streamed\)"))


def test_chinese_switch_changes_the_labels(page):
    from playwright.sync_api import expect

    assert label_of(page, "prompt") == TEXT["en"]["prompt"]["label"]
    page.click("#lang label:has-text('中文')")
    expect(page.locator("#prompt [data-testid=block-info]").first).to_have_text(TEXT["zh"]["prompt"]["label"])
    expect(page.locator("#generate")).to_have_text(TEXT["zh"]["generate"]["value"])
    expect(page.locator("#history")).to_contain_text("提示词")
    page.click("#lang label:has-text('English')")
    expect(page.locator("#prompt [data-testid=block-info]").first).to_have_text(TEXT["en"]["prompt"]["label"])


def test_an_empty_prompt_shows_an_error_in_the_page(page):
    from playwright.sync_api import expect

    page.click("#generate")
    expect(page.locator("[data-testid=toast-text]").first).to_contain_text("Type a prompt")
    assert page.locator("#result-audio audio[src]").count() == 0
