"""The SBS rating page in a real browser: Playwright driving the system's Chromium (Debian's `chromium`).

A person's session: give a name, answer with the mouse and with the keyboard, reload mid-study and go on,
undo, comment, finish, read the results page. Hostile titles and reasoning must show as characters.
Skipped, with the reason, where Playwright or Chromium is missing (`.ci/run` installs both).

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_sbs_browser.py
"""

import os
import shutil
import socket
import threading
import time

import pytest
import uvicorn
from sbs_inputs import HOSTILE_REASONING, HOSTILE_TITLE, write_inputs

from agrl.sbs.app import make_app
from agrl.sbs.store import Study
from agrl.sbs.study import create

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("AGRL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium found (apt-get install chromium, or set AGRL_CHROMIUM)", allow_module_level=True)
# Playwright's own browser download is not reachable here: the system browser, offline and quiet.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def served(tmp_path):
    paths = write_inputs(tmp_path / "in", n=6, hostile=True)
    study = tmp_path / "study.sqlite"
    create(paths["a"], paths["b"], paths["pairs"], study, seed=0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(study), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", study
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page():
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser.new_page()
        browser.close()


def _answers(study):
    return {a["item_id"]: a for a in Study(study).rows()[1]}


def _check_text_only(page):
    """Markup in titles and reasoning is shown as typed, never run or rendered."""
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img, main script, main b").count() == 0
    shown = page.locator("#product dd").first.inner_text()
    if "<script>" in shown:
        assert shown == HOSTILE_TITLE
        return True
    for side in ("#left", "#right"):
        reasoning = page.locator(f"{side} .reasoning").inner_text()
        assert "onerror" not in reasoning or reasoning == HOSTILE_REASONING
    return False


def test_a_rater_session_in_chromium(served, page):
    url, study = served
    expect = sync_api.expect
    page.goto(url)
    page.fill("#name", "ana")
    page.click("text=Start")
    expect(page.locator("#count")).to_have_text("0 / 6 done")
    seen_hostile = _check_text_only(page)
    expect(page.locator("#right .reasoning, #left .reasoning").first).not_to_be_empty()

    page.click("button[data-choice=left]")  # 1: the mouse
    expect(page.locator("#count")).to_have_text("1 / 6 done")
    seen_hostile |= _check_text_only(page)
    second = page.evaluate("item.id")

    page.keyboard.press("3")  # 2: the keyboard: the label the rater believes, then "B is better"
    expect(page.locator("#labels button.on")).to_have_text("3 Related")
    page.keyboard.press("b")
    expect(page.locator("#count")).to_have_text("2 / 6 done")
    assert _answers(study)[second]["label"] == 3 and _answers(study)[second]["choice"] == "right"

    page.reload()  # mid-study: the page remembers the rater and goes on where they stopped
    expect(page.locator("#count")).to_have_text("2 / 6 done")
    assert page.evaluate("item.id") not in _answers(study)

    page.keyboard.press("u")  # undo: the second item again, its label still chosen
    expect(page.locator("#count")).to_have_text("1 / 6 done")
    assert page.evaluate("item.id") == second
    expect(page.locator("#labels button.on")).to_have_text("3 Related")
    expect(page.locator("button.previous")).to_have_attribute("data-choice", "right")
    page.keyboard.press("g")
    expect(page.locator("#count")).to_have_text("2 / 6 done")
    assert _answers(study)[second]["choice"] == "both_good"

    seen_hostile |= _check_text_only(page)
    third = page.evaluate("item.id")
    page.keyboard.press("c")  # a comment: typing in it must not trigger the shortcuts
    page.keyboard.type("a b g x: the titles disagree")
    page.keyboard.press("Escape")
    page.keyboard.press("x")
    expect(page.locator("#count")).to_have_text("3 / 6 done")
    assert _answers(study)[third]["comment"] == "a b g x: the titles disagree"

    while page.locator("#rate").is_visible():
        seen_hostile |= _check_text_only(page)
        done = page.locator("#count").inner_text()
        page.click("button[data-choice=right]")
        expect(page.locator("#count")).not_to_have_text(done)
    expect(page.locator("#done")).to_be_visible()
    assert seen_hostile, "the item with the hostile title was never shown"
    answers = _answers(study)
    assert len(answers) == 6 and {a["rater"] for a in answers.values()} == {"ana"}

    page.click("text=See the results")
    expect(page.locator("h1")).to_have_text("Side-by-side study: judge B against judge A")
    row = page.locator("table").first.locator("tr").nth(1).locator("td")
    counts = [row.nth(i).inner_text() for i in (1, 2)]
    assert counts == ["6", "6"]  # items, answers
    verdicts = [a["verdict"] for a in answers.values()]
    assert [row.nth(i).inner_text() for i in (5, 6, 7, 8)] == [
        str(verdicts.count(v)) for v in ("b", "a", "both_good", "both_bad")]
    assert page.evaluate("window.pwned") is None
