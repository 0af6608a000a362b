"""The drawing page in a real browser (headless Chromium through selenium) against a real server.

Strokes are real pointer events (WebDriver actions of a mouse, a pen and a finger) through the page's
own handlers. What the page shows must be what the HTTP digits API answers for the same canvas PNG,
verdict included, and with the conftest's centroid classifier (MNIST class means) the drawn shapes
must read as the digits they are: a vertical stroke as 1, a 7 as 7, an oval as 0; a blank page as no digit.

The README's picture is lenet's, taken by `python -m bench.readme_examples --screenshot docs/page.png`;
PAGE_SCREENSHOT, PAGE_VERDICT_SCREENSHOT and PAGE_PHONE_SCREENSHOT (paths) save what these tests see.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import urllib3
from PIL import Image

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from contracts.images.formats import FORMATS, SUPPORTED_FORMATS  # noqa: E402
from contracts.sessions import RuntimeOptions  # noqa: E402
from serve.server import BackgroundServer, ServerConfig  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The canvas's own resolution (its CSS size may differ): strokes are given in these units.
CANVAS_SIZE = 280
WAIT_S = 30
# A 7 and an oval 0, as a person draws them (x, y on the 280 x 280 canvas).
SEVEN = [(80, 60), (200, 60), (120, 230)]
ZERO = [(140 + 60 * math.sin(t / 24 * 2 * math.pi), 140 - 90 * math.cos(t / 24 * 2 * math.pi)) for t in range(25)]
VERTICAL = [(140, 50), (140, 230)]


@pytest.fixture(scope="module")
def driver():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.skip(f"{path} is missing: the page test drives Debian's Chromium; "
                        "install it with: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,880", "--hide-scrollbars"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield browser
    browser.quit()


@pytest.fixture
def page(driver, server):
    driver.get(server.http_url + "/")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.models") == "loaded")
    yield driver
    # No script error and no Content-Security-Policy violation on the way (both are SEVERE entries).
    severe = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    unexpected = [message for message in severe if "Failed to load resource" not in message]
    assert not unexpected, unexpected


def wait(driver, condition, timeout: float = WAIT_S):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def shown_digit(driver) -> str:
    return driver.find_element(By.ID, "digit").text


def wait_for_answer(driver) -> str:
    """The digit shown once the page has no request in flight or pending."""
    wait(driver, lambda d: state(d) == "idle" and shown_digit(d) != "–")
    return shown_digit(driver)


def stroke_actions(driver, strokes, kind: str, release: bool = True) -> ActionBuilder:
    """Pointer actions along each stroke (canvas units), a move every few pixels as a hand makes them."""
    canvas = driver.find_element(By.ID, "canvas")
    scale = canvas.rect["width"] / CANVAS_SIZE
    builder = ActionBuilder(driver, mouse=PointerInput(kind, kind), duration=10)
    pointer = builder.pointer_action

    def offset(x, y):  # WebDriver moves are relative to the element's centre
        return round((x - CANVAS_SIZE / 2) * scale), round((y - CANVAS_SIZE / 2) * scale)

    for index, stroke in enumerate(strokes):
        pointer.move_to(canvas, *offset(*stroke[0]))
        pointer.pointer_down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            steps = max(1, int(math.hypot(x1 - x0, y1 - y0) / 8))
            for step in range(1, steps + 1):
                pointer.move_to(canvas, *offset(x0 + (x1 - x0) * step / steps, y0 + (y1 - y0) * step / steps))
        if release or index < len(strokes) - 1:
            pointer.pointer_up()
    return builder


def draw(driver, strokes, kind: str = interaction.POINTER_MOUSE) -> None:
    stroke_actions(driver, strokes, kind).perform()


def canvas_png(driver) -> bytes:
    url = driver.execute_script("return document.getElementById('canvas').toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def api_answer(server, image: bytes, model: str = "centroid") -> dict:
    """What the HTTP digits API answers for these bytes, asked as the page asks."""
    response = urllib3.request("POST", f"{server.http_url}/digits/v1/models/{model}/classify?details=1&top_k=1",
                               body=image, headers={"Content-Type": "image/png"}, timeout=30)
    assert response.status == 200, response.data
    return json.loads(response.data)["predictions"][0]


def shown(driver) -> dict:
    """The page's prediction as a person sees it: the digit, the ten bars, the model's picture."""
    return driver.execute_script("""
        const bars = [...document.querySelectorAll('#bars .bar')];
        const seen = document.getElementById('seen');
        return {
            digit: document.getElementById('digit').textContent,
            verdict: document.getElementById('digit').dataset.verdict || null,
            headline: document.getElementById('verdict').textContent,
            reason: document.getElementById('reason').hidden ? null : document.getElementById('reason').textContent,
            labels: bars.map((bar) => bar.querySelector('.label').textContent),
            probabilities: bars.map((bar) => Number(bar.dataset.probability)),
            fills: bars.map((bar) => bar.querySelector('.fill').getBoundingClientRect().width
                                     / bar.querySelector('.track').getBoundingClientRect().width),
            top: bars.filter((bar) => bar.classList.contains('top')).map((bar) => bar.dataset.label),
            seen: seen.hidden ? null : seen.src,
            seen_size: [seen.naturalWidth, seen.naturalHeight],
            seen_css: [seen.getBoundingClientRect().width, getComputedStyle(seen).imageRendering],
        };
    """)


def assert_shows(driver, answer: dict, input_size: int = 28) -> None:
    wait(driver, lambda d: shown(d)["seen_size"] == [input_size, input_size])
    page = shown(driver)
    assert page["labels"] == [str(i) for i in range(10)]
    assert page["probabilities"] == answer["probabilities"]
    candidates = [page["labels"][c] for c in answer["candidates"]]
    assert (page["verdict"], page["reason"]) == (answer["verdict"], answer["reason"])
    if answer["verdict"] == "digit":
        assert (page["digit"], page["headline"]) == (answer["label"], f"It reads {answer['label']}")
        assert page["top"] == [answer["label"]]
    elif answer["verdict"] == "unsure":
        assert (page["digit"], page["headline"]) == ("|".join(candidates), f"Not sure: {candidates[0]} or {candidates[1]}?")
        assert page["top"] == sorted(candidates, key=page["labels"].index)
    else:
        assert page["headline"] == "I don't see a digit" and page["top"] == []
    # The bars are drawn to scale (they animate: allow what is left of the transition).
    wait(driver, lambda d: np.allclose(shown(d)["fills"], answer["probabilities"], atol=0.02))
    assert page["seen"] == answer["model_input"]
    assert page["seen_css"][0] >= 4 * input_size and page["seen_css"][1] == "pixelated"


def on_paper(pixels_uint8: np.ndarray, scale: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.kron(255 - pixels_uint8, np.ones((scale, scale), np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_vertical_stroke_reads_1_while_it_is_drawn(page, server):
    stroke_actions(page, [VERTICAL], interaction.POINTER_MOUSE, release=False).perform()
    # The pointer is still down: the answer came from the live updates, not from the end of the stroke.
    assert wait_for_answer(page) == "1"
    lift = ActionBuilder(page, mouse=PointerInput(interaction.POINTER_MOUSE, interaction.POINTER_MOUSE))
    lift.pointer_action.pointer_up()
    lift.perform()
    wait_for_answer(page)
    answer = api_answer(server, canvas_png(page))
    assert answer["label"] == "1"
    assert_shows(page, answer)


def test_a_pen_seven_reads_7_and_a_finger_zero_reads_0(page, server):
    draw(page, [SEVEN], interaction.POINTER_PEN)
    assert wait_for_answer(page) == "7"
    answer = api_answer(server, canvas_png(page))
    assert answer["label"] == "7"
    assert_shows(page, answer)
    if os.environ.get("PAGE_SCREENSHOT"):
        page.save_screenshot(os.environ["PAGE_SCREENSHOT"])
    page.find_element(By.ID, "clear").click()
    draw(page, [ZERO], interaction.POINTER_TOUCH)
    assert wait_for_answer(page) == "0"
    answer = api_answer(server, canvas_png(page))
    assert answer["label"] == "0"
    assert_shows(page, answer)


def test_clear_empties_the_pad_and_the_answer(page):
    draw(page, [VERTICAL])
    wait_for_answer(page)
    page.find_element(By.ID, "clear").click()
    blank = page.execute_script("""
        const canvas = document.getElementById('canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        return data.every((value) => value === 255);
    """)
    assert blank
    after = shown(page)
    assert after["digit"] == "–" and after["seen"] is None and after["top"] == []
    assert after["probabilities"] == [0] * 10 and state(page) == "idle"


def test_the_model_list_comes_from_the_api_and_a_choice_reclassifies(page, server):
    listing = json.loads(urllib3.request("GET", f"{server.http_url}/digits/v1/models", timeout=10).data)
    classifiers = [m["name"] for m in listing["models"] if m["classifies_images"]]
    select = Select(page.find_element(By.ID, "model"))
    assert [option.text for option in select.options] == classifiers and "padded32" in classifiers
    draw(page, [SEVEN])
    wait_for_answer(page)
    select.select_by_visible_text("padded32")
    wait(page, lambda d: shown(d)["seen_size"] == [32, 32] and state(d) == "idle")
    assert_shows(page, api_answer(server, canvas_png(page), model="padded32"), input_size=32)


def test_a_picked_file_and_a_dropped_file_are_classified_as_sent(page, server, mnist_test_set, tmp_path):
    images, labels = mnist_test_set
    picked = tmp_path / "picked.png"
    picked.write_bytes(on_paper(images[0]))
    page.find_element(By.ID, "file").send_keys(str(picked))
    answer = api_answer(server, picked.read_bytes())
    wait(page, lambda d: state(d) == "idle" and shown(d)["seen"] == answer["model_input"])
    assert_shows(page, answer)
    # The file is shown on the pad too (drawn into the canvas, scaled to fit): dark ink on the white pad.
    assert page.execute_script("""
        const canvas = document.getElementById('canvas');
        return canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data.some((v) => v < 64);
    """)

    dropped = on_paper(images[1])
    drop_file(page, dropped, "dropped.png", "image/png")
    answer = api_answer(server, dropped)
    wait(page, lambda d: state(d) == "idle" and shown(d)["seen"] == answer["model_input"])
    assert_shows(page, answer)


def test_a_blank_page_shows_no_digit_and_a_drawn_digit_the_digit(page, server):
    white_paper = on_paper(np.zeros((28, 28), np.uint8))
    drop_file(page, white_paper, "blank.png", "image/png")
    answer = api_answer(server, white_paper)
    assert answer["verdict"] == "no_digit"
    wait(page, lambda d: state(d) == "idle" and shown(d)["headline"] == "I don't see a digit")
    assert_shows(page, answer)
    assert shown(page)["reason"].startswith("no ink")
    draw(page, [VERTICAL])
    wait(page, lambda d: state(d) == "idle" and shown(d)["headline"] == "It reads 1")
    answer = api_answer(server, canvas_png(page))
    assert (answer["verdict"], answer["label"]) == ("digit", "1")
    assert_shows(page, answer)


def test_an_unsure_answer_names_both_candidates(page, server):
    # Every drawing is unsure for a model whose card asks for more than it can give: `judged` doubts most.
    Select(page.find_element(By.ID, "model")).select_by_visible_text("judged")
    draw(page, [SEVEN, [(60, 140), (220, 140)]])  # a 7 crossed through the middle: between classes
    wait(page, lambda d: state(d) == "idle" and shown(d)["verdict"] is not None)
    answer = api_answer(server, canvas_png(page), model="judged")
    assert answer["verdict"] == "unsure", answer["reason"]
    assert_shows(page, answer)
    if os.environ.get("PAGE_VERDICT_SCREENSHOT"):
        page.save_screenshot(os.environ["PAGE_VERDICT_SCREENSHOT"])


def drop_file(driver, data: bytes, name: str, mime: str) -> None:
    """A file dropped on the pad: the drop event a browser fires, carrying the file in its DataTransfer."""
    driver.execute_script("""
        const [encoded, name, mime] = arguments;
        const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: mime }));
        const pad = document.getElementById('pad');
        pad.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }));
        pad.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    """, base64.b64encode(data).decode("ascii"), name, mime)


def test_server_errors_are_shown_on_the_page(page):
    drop_file(page, b"these are not the pixels you are looking for", "notes.txt", "text/plain")
    error = page.find_element(By.ID, "error")
    wait(page, lambda d: error.is_displayed() and state(d) == "idle")
    text = page.find_element(By.ID, "error-text").text
    # A person is told what to drop instead, in words of files, not of the API's body kinds.
    assert "415" in text and "notes.txt" in text and SUPPORTED_FORMATS in text
    assert "multipart" not in text and "Content-Type" not in text
    drop_file(page, b"these are not the pixels you are looking for", "notes.png", "image/png")
    wait(page, lambda d: "400" in d.find_element(By.ID, "error-text").text)
    assert f"not a {SUPPORTED_FORMATS} image" in page.find_element(By.ID, "error-text").text
    assert not page.find_element(By.ID, "token-form").is_displayed()
    # A good drawing afterwards clears the error.
    draw(page, [VERTICAL])
    assert wait_for_answer(page) == "1"
    wait(page, lambda d: not error.is_displayed())


def big_png(mnist_digit: np.ndarray) -> bytes:
    """A digit on a page larger than the test server's pixel limit (1 MiB pixels): refused with 413."""
    return on_paper(mnist_digit, scale=40)


@pytest.mark.parametrize("name, mime, status", [("big.png", "image/png", "413"), ("empty.png", "image/png", "400"),
                                                ("notes.txt", "text/plain", "415")])
def test_an_error_clears_the_previous_answer(page, mnist_test_set, name, mime, status):
    images, _ = mnist_test_set
    data = {"big.png": big_png(images[0]), "empty.png": b"", "notes.txt": b"a shopping list"}[name]
    draw(page, [VERTICAL])
    assert wait_for_answer(page) == "1"
    drop_file(page, data, name, mime)
    error = page.find_element(By.ID, "error")
    wait(page, lambda d: error.is_displayed() and state(d) == "idle")
    assert status in page.find_element(By.ID, "error-text").text
    after = shown(page)
    # Nothing of the drawing's answer stays beside the error: no digit, no bars, no model input.
    assert after["digit"] == "–" and after["verdict"] != "digit" and "1" not in after["headline"]
    assert after["probabilities"] == [0] * 10 and after["top"] == [] and after["seen"] is None
    wait(page, lambda d: max(shown(d)["fills"]) == 0)


def test_the_file_picker_offers_every_format_the_server_reads(page, server, mnist_test_set, tmp_path):
    accept = page.find_element(By.ID, "file").get_attribute("accept").split(",")
    assert sorted(accept) == sorted({image_format.media_type for image_format in FORMATS})
    images, _ = mnist_test_set
    picked = tmp_path / "digit.webp"
    Image.open(io.BytesIO(on_paper(images[2]))).save(picked, format="WEBP", lossless=True)
    page.find_element(By.ID, "file").send_keys(str(picked))
    answer = api_answer(server, picked.read_bytes())
    wait(page, lambda d: state(d) == "idle" and shown(d)["seen"] == answer["model_input"])
    assert_shows(page, answer)


PHONE_WINDOW = (400, 760)


def in_view(driver, element_id: str) -> dict:
    return driver.execute_script("""
        const box = document.getElementById(arguments[0]).getBoundingClientRect();
        const pad = document.getElementById('canvas').getBoundingClientRect();
        return {
            visible: box.top >= 0 && box.bottom <= window.innerHeight && box.left >= 0 && box.right <= window.innerWidth,
            over_pad: box.top < pad.bottom && box.bottom > pad.top && box.left < pad.right && box.right > pad.left,
            width: window.innerWidth,
        };
    """, element_id)


def test_on_a_phone_the_answer_is_in_view_while_drawing(driver, server):
    wide = driver.get_window_size()
    driver.set_window_size(*PHONE_WINDOW)
    try:
        driver.get(server.http_url + "/")
        wait(driver, lambda d: d.execute_script("return document.body.dataset.models") == "loaded")
        assert in_view(driver, "canvas")["width"] <= PHONE_WINDOW[0]
        stroke_actions(driver, [VERTICAL], interaction.POINTER_TOUCH, release=False).perform()
        assert wait_for_answer(driver) == "1"  # the finger is still down
        if os.environ.get("PAGE_PHONE_SCREENSHOT"):
            driver.save_screenshot(os.environ["PAGE_PHONE_SCREENSHOT"])
        for element_id in ("digit", "verdict"):
            where = in_view(driver, element_id)
            assert where["visible"] and not where["over_pad"], (element_id, where)
        lift = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, interaction.POINTER_TOUCH))
        lift.pointer_action.pointer_up()
        lift.perform()
        wait_for_answer(driver)
    finally:
        driver.set_window_size(wide["width"], wide["height"])


def test_a_server_with_tokens_gets_its_token_from_the_page(driver, model_dir, tmp_path):
    token = "page-token-0123456789"
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{token}\n")
    config = ServerConfig(model_paths=(model_dir / "centroid.onnx",), port=0, http_port=0,
                          runtime=RuntimeOptions(device="cpu"), token_file=token_file)
    with BackgroundServer(config) as server:
        driver.get(server.http_url + "/")
        token_form = driver.find_element(By.ID, "token-form")
        wait(driver, lambda d: token_form.is_displayed())
        assert "401" in driver.find_element(By.ID, "error-text").text
        driver.find_element(By.ID, "token").send_keys(token)
        token_form.find_element(By.TAG_NAME, "button").click()
        wait(driver, lambda d: d.execute_script("return document.body.dataset.models") == "loaded")
        assert not driver.find_element(By.ID, "error").is_displayed()
        draw(driver, [VERTICAL])
        assert wait_for_answer(driver) == "1"
        driver.execute_script("sessionStorage.clear()")
