"""The README's example answers and its picture of the page, from the quick start's model.

    python -m bench.readme_examples                       # print lenet's answers to MNIST's first test digit
    python -m bench.readme_examples --readme README.md --screenshot docs/page.png   # rewrite both

Trains and exports nothing: it serves the model file given (default models/lenet.onnx, what
`python -m export lenet` writes) in this process on free ports, sends MNIST's first test digit (a 7,
dark on white, as the README's `my_digit.png`) through the HTTP digits API and through
`python -m serve.client`, and prints both answers as the README shows them. Run it from a clone's
root after every retraining, so that the README shows what the quick start's model really answers:

- `--readme README.md` replaces the README's blocks between `<!-- readme-examples: NAME -->` and
  `<!-- /readme-examples -->` (NAME `answers`: the two answers; `page`: the picture's line, whose
  description names what the page read);
- `--screenshot docs/page.png` draws a 7 on the page in headless Chromium (selenium and Debian's
  chromium-driver) and saves what the window shows.

Exit status: 0 on success, 2 when the model, MNIST or Chromium is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from contracts.data_dir import DATA_DIR_HELP, resolve_data_dir
from contracts.mnist_idx import load_mnist_test
from contracts.model_file import ModelLoadError
from contracts.sessions import RuntimeOptions
from serve import client as client_cli
from serve.server import BackgroundServer, ServerConfig

EXIT_OK, EXIT_CANNOT_RUN = 0, 2
DEFAULT_MODEL = Path("models/lenet.onnx")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WINDOW = (1100, 900)
# A 7 as a person draws it, in the page's canvas units (280 x 280).
SEVEN = [(80, 60), (200, 60), (120, 230)]
_BLOCK = re.compile(r"(<!-- readme-examples: (?P<name>\w+) -->\n)(?P<body>.*?)(<!-- /readme-examples -->)", re.S)


def my_digit_png(data_dir: Path | None) -> bytes:
    """MNIST's first test digit, dark ink on white, as the README's my_digit.png."""
    images, _ = load_mnist_test(resolve_data_dir(data_dir))
    buffer = io.BytesIO()
    Image.fromarray(255 - images[0].astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def http_answer(server: BackgroundServer, png: bytes) -> str:
    """The answer to the README's curl command, as curl prints it."""
    request = urllib.request.Request(f"{server.http_url}/digits/v1/classify", data=png,
                                     headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def client_table(server: BackgroundServer, png: bytes) -> str:
    """What `python -m serve.client my_digit.png` prints."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "my_digit.png"
        path.write_bytes(png)
        output = io.StringIO()
        with contextlib.chdir(folder), contextlib.redirect_stdout(output):
            status = client_cli.main([path.name, "--server", server.target])
    if status != client_cli.EXIT_OK:
        raise RuntimeError(f"the client exited {status}: {output.getvalue()}")
    return output.getvalue().rstrip("\n")


def answers_block(model_name: str, answer_json: str, table: str) -> str:
    answer = json.dumps(json.loads(answer_json), separators=(", ", ": "))
    return (f"What `{model_name}` answers for MNIST's first test digit (a 7), over HTTP:\n\n"
            f"```json\n{answer}\n```\n\nand through gRPC (`python -m serve.client my_digit.png`):\n\n"
            f"```text\n{table}\n```\n")


def draw_seven_and_screenshot(server: BackgroundServer, path: Path) -> dict:
    """Draw a 7 on the page, wait for its answer, save the window; returns what the page showed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        browser.get(server.http_url + "/")
        until = WebDriverWait(browser, 30, poll_frequency=0.05).until
        until(lambda b: b.execute_script("return document.body.dataset.models") == "loaded")
        canvas = browser.find_element("id", "canvas")
        scale = canvas.rect["width"] / 280
        actions = ActionBuilder(browser, mouse=PointerInput("pen", "pen"), duration=10)
        pointer = actions.pointer_action
        points = [(x0 + (x1 - x0) * step / 20, y0 + (y1 - y0) * step / 20)
                  for (x0, y0), (x1, y1) in zip(SEVEN, SEVEN[1:]) for step in range(21)]
        pointer.move_to(canvas, round((points[0][0] - 140) * scale), round((points[0][1] - 140) * scale))
        pointer.pointer_down()
        for x, y in points[1:]:
            pointer.move_to(canvas, round((x - 140) * scale), round((y - 140) * scale))
        pointer.pointer_up()
        actions.perform()
        until(lambda b: b.execute_script("return document.body.dataset.state") == "idle"
              and b.find_element("id", "seen").get_attribute("src"))
        # The bars and the busy dot animate: wait until every transition has ended.
        until(lambda b: b.execute_script("return document.getAnimations().length === 0"))
        shown = browser.execute_script("""
            return {headline: document.getElementById('verdict').textContent,
                    sub: document.getElementById('verdict-sub').textContent};
        """)
        path.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(path))
        return shown
    finally:
        browser.quit()


def page_block(model_name: str, shown: dict, screenshot: Path, readme: Path) -> str:
    relative = Path(os.path.relpath(Path(screenshot).resolve(), readme.resolve().parent))
    return (f"![The drawing page serving {model_name}: a 7 drawn on the pad, the page says \"{shown['headline']}, "
            f"{shown['sub']}\", with the ten probabilities and the 28x28 picture the model received]({relative.as_posix()})\n")


def rewrite_blocks(readme: Path, blocks: dict[str, str]) -> None:
    text = readme.read_text()
    found = {match["name"] for match in _BLOCK.finditer(text)}
    missing = set(blocks) - found
    if missing:
        raise ValueError(f"{readme} has no <!-- readme-examples: NAME --> block for {sorted(missing)}")
    readme.write_text(_BLOCK.sub(lambda m: m[1] + blocks.get(m["name"], m["body"]) + m[4], text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the model file (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--readme", type=Path, help="rewrite this file's readme-examples blocks")
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the page, a 7 drawn on it, here")
    args = parser.parse_args(argv)
    if args.screenshot and not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        print(f"error: --screenshot drives {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver",
              file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        png = my_digit_png(args.data_dir)
        config = ServerConfig(model_paths=(args.model,), port=0, http_port=0, runtime=RuntimeOptions(device="cpu"))
        with BackgroundServer(config) as server:
            (model_name,) = server.server.runners
            blocks = {"answers": answers_block(model_name, http_answer(server, png), client_table(server, png))}
            if args.screenshot:
                shown = draw_seven_and_screenshot(server, args.screenshot)
                blocks["page"] = page_block(model_name, shown, args.screenshot, args.readme or Path("README.md"))
    except (OSError, ValueError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(blocks["answers"], end="")
    if "page" in blocks:
        print(f"\n{blocks['page']}", end="")
    if args.readme:
        rewrite_blocks(args.readme, blocks)
        print(f"\nrewrote the readme-examples blocks {', '.join(sorted(blocks))} of {args.readme}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
