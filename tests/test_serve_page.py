"""The page in a real browser: `python -m vit_ms.serve` started as a user starts it, headless Chromium driven by
Selenium drops, pastes and chooses images and reads what a user sees (top-k bars, the attention overlay, the time,
the run's story, a refused file's message).

Needs Chromium and its driver from the system's packages (apt-get install chromium chromium-driver; .ci/run
installs them); skipped, saying so, where they are not installed.
"""
import base64
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serve_fixtures import write_run_story
from tiny_run import CLASSES, reference_logits, write_tiny_run

REPO = Path(__file__).resolve().parents[1]
BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (BROWSER and DRIVER), reason="no Chromium and chromedriver installed "
                                 "(apt-get install chromium chromium-driver)")]


def start_server(args, timeout_s: float = 120.0):
    """`python -m vit_ms.serve ARGS --port 0`; returns the process and the URL it prints once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "vit_ms.serve", *args, "--port", "0"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            process.kill()
            raise AssertionError("the server did not start:\n" + "".join(seen))
        seen.append(line)
        found = re.search(r"on (http://\S+/) ", line)
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            raise AssertionError("the server stopped:\n" + "".join(seen))


GIVE_FILE = """
const [how, name, b64] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: "image/png"}));
if (how === "drop") {
  document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
} else {
  document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
}
"""


def give(browser, how: str, path: Path) -> None:
    """Drop `path` on the page's drop zone, or paste it, as a user's browser would deliver it."""
    browser.execute_script(GIVE_FILE, how, path.name, base64.b64encode(path.read_bytes()).decode())


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1100,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_shows_topk_attention_time_and_the_run(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    run = write_tiny_run(tmp_path)
    write_run_story(run.ckpt_a.parent, run.ckpt_a.stem, run.config)
    expected = reference_logits(run.config, run.ckpt_a, run.good[:1])[0]  # (3,) logits of the first image
    process, url = start_server(["--ckpt", str(run.ckpt_a), "--batch-size", "2"])
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(url)
        wait.until(ec.text_to_be_present_in_element((By.ID, "model-line"), "vit_ti16"))
        assert "3 classes" in browser.find_element(By.ID, "model-line").text

        give(browser, "drop", run.good[0])
        result = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".result.done")))
        rows = result.find_elements(By.CSS_SELECTOR, ".topk li")
        labels = [r.find_element(By.CLASS_NAME, "label").text for r in rows]
        percents = [float(r.find_element(By.CLASS_NAME, "prob").text.rstrip("%")) for r in rows]
        assert sorted(labels) == sorted(CLASSES) and labels[0] == CLASSES[int(expected.argmax())]
        assert percents == sorted(percents, reverse=True) and abs(sum(percents) - 100) < 0.5
        for row, percent in zip(rows, percents):  # each bar is drawn as long as its probability
            fill, bar = (row.find_element(By.CLASS_NAME, name).size["width"] for name in ("fill", "bar"))
            drawn = fill / bar
            assert abs(100 * drawn - percent) < 1.5
        overlay = result.find_element(By.CLASS_NAME, "overlay")
        wait.until(lambda _: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                    overlay) == 32)
        assert overlay.is_displayed()
        assert re.search(r"\d+ ms for this image", result.find_element(By.CLASS_NAME, "timing").text)

        story = browser.find_element(By.ID, "story")
        assert story.is_displayed()
        curves = browser.find_element(By.ID, "curves")
        wait.until(lambda _: browser.execute_script("return arguments[0].naturalWidth", curves) == 30)
        cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#per-class td")]
        assert cells[:4] == ["cat", "4", "100.0%", ""] and "dog" in cells
        assert "vit_ti16: patch 8, width 32, depth 2" in browser.find_element(By.ID, "plan").text

        give(browser, "paste", run.good[2])
        wait.until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, ".result.done")) == 2)
        browser.find_element(By.ID, "files").send_keys(str(run.text_file))  # chosen with the file dialog
        failed = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".result.failed")))
        assert "not a readable image" in failed.find_element(By.CLASS_NAME, "error").text
        names = [n.text for n in browser.find_elements(By.CSS_SELECTOR, ".result .name")]
        assert names == [run.text_file.name, run.good[2].name, run.good[0].name]  # newest first
    finally:
        process.terminate()
        process.wait(timeout=30)
