"""The SBS rating page in a real browser: Playwright driving the system's Chromium (Debian's `chromium`).

Two raters, each from their own link (token): one answers with the mouse and the keyboard, reloads
mid-study and goes on, undoes, comments, finishes; the other disagrees. A gold item sits among the items,
unmarked. The lead, from the lead's link, settles a disagreement, reads the results (gold accuracy per
rater) and downloads the export; a rater cannot open the results. Hostile titles and reasoning must show
as characters.
Skipped, with the reason, where Playwright or Chromium is missing (`.ci/run` installs both).

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_sbs_browser.py
"""

import csv
import json
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
    gold = tmp_path / "in" / "gold.jsonl"
    gold.write_text(json.dumps({"id": "p1", "label": 4}) + "\n")  # A says 4, B says 2: A is right
    study = tmp_path / "study.sqlite"
    create(paths["a"], paths["b"], paths["pairs"], study, seed=0, raters_per_item=2, gold=gold)
    tokens = Study(study).add_raters(["ana", "bo"])
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
    url = f"http://127.0.0.1:{port}"
    yield url, study, {name: f"{url}/#token={token}" for name, token in tokens.items()}
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _answers(study, rater="ana"):
    return {a["item_id"]: a for a in Study(study).rows()[1] if a["rater"] == rater}


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


def test_two_raters_a_gold_item_an_adjudication_and_the_export_in_chromium(served, browser, tmp_path):
    url, study, links = served
    expect = sync_api.expect
    page = browser.new_context().new_page()  # each person their own browser profile (cookies)
    page.goto(links["ana"])
    expect(page.locator("#rater-name")).to_have_text("ana")
    assert "token" not in page.url  # the token left the address bar (and history) once used
    expect(page.locator("#count")).to_have_text("0 / 6 done")  # 5 items and the gold one, unmarked
    seen_hostile = _check_text_only(page)
    expect(page.locator("#right .reasoning, #left .reasoning").first).not_to_be_empty()
    expect(page.locator("#left .score, #right .score").first).to_contain_text("on 1–4")  # the scale, stated

    page.click("button[data-choice=left]")  # 1: the mouse
    expect(page.locator("#count")).to_have_text("1 / 6 done")
    seen_hostile |= _check_text_only(page)
    second = page.evaluate("item.id")

    page.keyboard.press("3")  # 2: the keyboard: the label the rater believes, then "B is better"
    expect(page.locator("#labels button.on")).to_have_text("3 Related")
    page.keyboard.press("b")
    expect(page.locator("#count")).to_have_text("2 / 6 done")
    assert _answers(study)[second]["label"] == 3 and _answers(study)[second]["choice"] == "right"
    assert _answers(study)[second]["latency_ms"] > 0  # measured by the page

    page.reload()  # mid-study: the page remembers the rater (its cookie) and goes on where they stopped
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

    gold = next(i for i in Study(study).rows()[0] if i["gold"])
    a_side = "right" if gold["flipped"] else "left"  # where judge A, the gold answer, sits
    while page.locator("#rate").is_visible():
        seen_hostile |= _check_text_only(page)
        done = page.locator("#count").inner_text()
        page.click(f"button[data-choice={a_side if page.evaluate('item.id') == gold['id'] else 'right'}]")
        expect(page.locator("#count")).not_to_have_text(done)
    expect(page.locator("#done")).to_be_visible()
    assert seen_hostile, "the item with the hostile title was never shown"
    assert len(_answers(study)) == 6
    assert page.goto(f"{url}/results").status == 403  # the results are the lead's

    bo = browser.new_context().new_page()  # the second rater: left on everything, the gold item wrong
    bo.goto(links["bo"])
    expect(bo.locator("#rater-name")).to_have_text("bo")
    expect(bo.locator("#count")).to_have_text("0 / 6 done")
    while bo.locator("#rate").is_visible():
        done = bo.locator("#count").inner_text()
        bo.click(f"button[data-choice={'right' if a_side == 'left' else 'left'}]"
                 if bo.evaluate("item.id") == gold["id"] else "button[data-choice=left]")
        expect(bo.locator("#count")).not_to_have_text(done)
    assert len(_answers(study, "bo")) == 6 and len(_answers(study)) == 6  # nobody overwrote anybody

    lead = browser.new_context(accept_downloads=True).new_page()
    lead.goto(links["lead"])
    expect(lead.locator("#lead")).to_be_visible()
    cases = lead.locator("#adjudicate .case")
    expect(cases.first).to_be_visible()
    assert cases.count() == int(lead.locator("#disagree-count").inner_text()) >= 1
    first = cases.first
    settled_item = int(first.get_attribute("data-item"))
    expect(first.locator("td").first).to_have_text("ana")
    first.locator("select").select_option("2")
    first.locator("button[data-settle=right]").click()
    expect(lead.locator(f"#adjudicate .case[data-item='{settled_item}'] .settled")).to_have_text(
        "Settled: B is better, label 2")
    (adjudicated,) = [i["adjudication"] for i in Study(study).rows()[0] if i["adjudication"]]
    assert (adjudicated["item_id"], adjudicated["choice"], adjudicated["label"]) == (settled_item, "right", 2)

    with lead.expect_download() as download:
        lead.click("#export-csv")
    exported = tmp_path / "answers.csv"
    download.value.save_as(exported)
    rows = list(csv.DictReader(exported.open()))
    assert len(rows) == 12 and {r["rater"] for r in rows} == {"ana", "bo"}
    assert sum(r["gold"] == "True" for r in rows) == 2 and all(r["latency_ms"] for r in rows)

    lead.goto(f"{url}/results")
    expect(lead.locator("h1")).to_have_text("Side-by-side study: judge B against judge A")
    row = lead.locator("table").first.locator("tr").nth(1).locator("td")
    assert [row.nth(i).inner_text() for i in (1, 2, 11)] == ["5", "10", "1"]  # items, answers, adjudicated
    gold_table = lead.locator("h2:text('Raters on the gold items') + p + table")
    ana_right = _answers(study)[gold["id"]]["verdict"] == "a"  # the scripted keys above may have met it first
    assert gold_table.locator("tr").nth(1).inner_text().split("\t")[:3] == ["ana", "1", f"{ana_right:.3f}"]
    assert gold_table.locator("tr").nth(2).inner_text().split("\t")[:3] == ["bo", "1", "0.000"]
    for p in (page, bo, lead):
        assert p.evaluate("window.pwned") is None
