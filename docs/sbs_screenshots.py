"""The SBS screenshots of docs/service.md: docs/sbs_rate.png (a rater's page), docs/sbs_adjudicate.png (the
lead's adjudication view) and docs/sbs_results.png (the lead's results page).

Makes the study from a demo folder (`agrl demo`, or `agrl demo --quick`): judge A its SFT model, B its AGRL
model, each scored on eval_balanced by `agrl sbs create` in one pass (label and score; no reasoning: the
quick demo's 2-3 training steps give judges that write no valid completion), up to 50 items (pairs both
judges label alike kept: the quick demo has 16 pairs), 2 raters per item, and gold items (10%) from the
pairs' own labels.
The answers are simulated, not people's: rater "gold" picks the judge whose label is the pair's synthetic
gold label (both good / both bad when both are right / wrong) and gives that label; rater "noisy" does the
same but answers at random one time in four (seeded). Each works from their own link (token), as people
would; the lead settles the first disagreement (by the gold label too). Run from the repository root:

    agrl demo --quick --out runs/quick && python docs/sbs_screenshots.py runs/quick
"""

import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from playwright.sync_api import sync_playwright

from agrl.sbs.app import make_app
from agrl.sbs.store import CHOICES, Study
from agrl.sbs.study import create

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def simulated_choice(item: dict, gold: int) -> str:
    a_right, b_right = item["a"]["label"] == gold, item["b"]["label"] == gold
    if a_right == b_right:
        return "both_good" if a_right else "both_bad"
    winner = "a" if a_right else "b"
    return "left" if (winner == "a") != bool(item["flipped"]) else "right"


def make_study(demo: Path) -> tuple[Path, dict[str, int]]:
    pairs = demo / "data" / "eval_balanced.jsonl"
    with pairs.open(encoding="utf-8") as handle:
        labels = {str(row["id"]): row["label"] for row in map(json.loads, handle)}
    gold_file = demo / "sbs_gold.jsonl"
    gold_file.write_text("".join(json.dumps({"id": pid, "label": label}) + "\n" for pid, label in labels.items()))
    study = demo / "sbs.sqlite"
    create(demo / "sft", demo / "agrl", pairs, study, sample=50, agreed="keep", raters_per_item=2, gold=gold_file, gold_share=0.1, force=True)
    return study, labels


def main(demo: str) -> None:
    study_path, gold = make_study(Path(demo))
    tokens = Study(study_path).add_raters(["ana", "gold", "noisy"])
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
        page = browser.new_context(viewport={"width": 1200, "height": 860}).new_page()
        page.goto(f"{url}/#token={tokens['ana']}")
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
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[rater]}"})
            while (item := client.get("/api/next").json()["item"]) is not None:
                full = items[item["id"]]
                choice = simulated_choice(full, gold[full["pair_id"]])
                label = gold[full["pair_id"]]
                if rater == "noisy" and rng.random() < 0.25:
                    choice, label = rng.choice(CHOICES), rng.choice([1, 2, 3, 4])
                client.post("/api/answer", json={"item_id": item["id"], "choice": choice, "label": label,
                                                 "latency_ms": rng.randint(3000, 20000)}).raise_for_status()
        lead = browser.new_context(viewport={"width": 1200, "height": 860}).new_page()
        lead.goto(f"{url}/#token={tokens['lead']}")
        first = lead.locator("#adjudicate .case").first
        first.wait_for()
        settled = items[int(first.get_attribute("data-item"))]  # the simulated lead sides with the gold label
        first.locator("select").select_option(str(gold[settled["pair_id"]]))
        first.locator(f"button[data-settle={simulated_choice(settled, gold[settled['pair_id']])}]").click()
        lead.locator("#adjudicate .case .settled").first.wait_for()
        lead.screenshot(path="docs/sbs_adjudicate.png", clip={"x": 0, "y": 0, "width": 1200, "height": 1400},
                        full_page=True)
        lead.goto(f"{url}/results")
        lead.screenshot(path="docs/sbs_results.png", full_page=True)
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main(*sys.argv[1:])
