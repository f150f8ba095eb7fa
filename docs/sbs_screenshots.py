"""The SBS screenshots of docs/service.md: docs/sbs_rate.png (the rating page) and docs/sbs_results.png (results).

The answers behind the results page are simulated, not people's: rater "gold" picks the judge whose label
is the pair's synthetic gold label (both good / both bad when both are right / wrong) and gives that label;
rater "noisy" does the same but answers at random one time in four (seeded). Run from the repository root:

    python docs/sbs_screenshots.py runs/demo/sbs.sqlite runs/demo/data/eval_balanced.jsonl
"""

import json
import random
import socket
import sys
import threading
import time

import httpx
import uvicorn
from playwright.sync_api import sync_playwright

from agrl.sbs.app import make_app
from agrl.sbs.store import CHOICES, Study

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def simulated_choice(item: dict, gold: int) -> str:
    a_right, b_right = item["a"]["label"] == gold, item["b"]["label"] == gold
    if a_right == b_right:
        return "both_good" if a_right else "both_bad"
    winner = "a" if a_right else "b"
    return "left" if (winner == "a") != bool(item["flipped"]) else "right"


def main(study_path: str, pairs_path: str) -> None:
    with open(pairs_path, encoding="utf-8") as pairs:
        gold = {str(row["id"]): row["label"] for row in map(json.loads, pairs)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(study_path), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(url)
        page.fill("#name", "ana")
        page.click("text=Start")
        for done, key in enumerate(("b", "g")):  # two answers, then a label chosen for the third item
            page.wait_for_selector(f"#count:text('{done} / ')")
            page.keyboard.press(key)
        page.wait_for_selector("#count:text('2 / ')")
        page.keyboard.press("2")
        page.screenshot(path="docs/sbs_rate.png", full_page=True)
        for done in (1, 0):  # take ana's two answers back: the results are the simulated raters' only
            page.keyboard.press("u")
            page.wait_for_selector(f"#count:text('{done} / ')")
        items = {i["id"]: i for i in Study(study_path).rows()[0]}
        rng = random.Random(0)
        for rater in ("gold", "noisy"):
            while (item := httpx.get(f"{url}/api/next", params={"rater": rater}).json()["item"]) is not None:
                full = items[item["id"]]
                choice = simulated_choice(full, gold[full["pair_id"]])
                label = gold[full["pair_id"]]
                if rater == "noisy" and rng.random() < 0.25:
                    choice, label = rng.choice(CHOICES), rng.choice([1, 2, 3, 4])
                httpx.post(f"{url}/api/answer", json={"rater": rater, "item_id": item["id"], "choice": choice,
                                                      "label": label}).raise_for_status()
        page.goto(f"{url}/results")
        page.screenshot(path="docs/sbs_results.png", full_page=True)
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main(*sys.argv[1:])
