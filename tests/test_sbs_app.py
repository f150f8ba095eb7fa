"""The SBS page's API: who may do what (tokens, roles), the lead's adjudication, events and export (sbs/app.py).

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_sbs_app.py
"""

import csv
import io
import json
import re
import sqlite3

import pytest
from fastapi.testclient import TestClient
from sbs_inputs import write_inputs
from typer.testing import CliRunner

from agrl.cli import app as cli
from agrl.sbs.app import make_app
from agrl.sbs.store import Study
from agrl.sbs.study import create


@pytest.fixture
def study(tmp_path):
    paths = write_inputs(tmp_path / "in")
    out = tmp_path / "study.sqlite"
    create(paths["a"], paths["b"], paths["pairs"], out, seed=1, raters_per_item=2)
    return out


@pytest.fixture
def tokens(study):
    return Study(study).add_raters(["ana", "bo"])


def client_of(app, token=None):
    client = TestClient(app)
    if token is not None:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def _log(study):
    with sqlite3.connect(study) as db:
        return db.execute("SELECT * FROM answers").fetchall(), db.execute("SELECT * FROM events").fetchall()


# A valid body for every write route, each naming rater "ana" where the route takes a rater: a new write
# route fails test_every_route_refuses_a_client_without_the_right_token until it is listed here.
BODIES = {
    "/api/login": {"token": "not-a-token"},
    "/api/logout": {},
    "/api/answer": {"rater": "ana", "item_id": 1, "choice": "left"},
    "/api/undo": {"rater": "ana"},
    "/api/adjudicate": {"item_id": 1, "choice": "left"},
}
LEAD_ONLY = {"/results", "/api/results", "/api/export", "/api/events", "/api/disagreements", "/api/adjudicate"}
RATER_ONLY = {"/api/next", "/api/answer", "/api/undo"}


def _routes(app):
    """(method, concrete path) of every route the app has, path parameters filled in."""
    for route in app.routes:
        for method in sorted(getattr(route, "methods", None) or ["GET"]):
            if method != "HEAD":
                yield method, re.sub(r"\{[^}]+\}", "page.js" if route.path == "/static/{name}" else "x", route.path)


def test_every_route_refuses_a_client_without_the_right_token(study, tokens):
    """Enumerated from the app: a route added later is covered without editing this test (BODIES aside)."""
    from agrl.sbs.app import PUBLIC

    app = make_app(study)
    ana = client_of(app, tokens["ana"])
    ana.post("/api/answer", json={"item_id": 1, "choice": "right"})  # something to undo or overwrite
    before = _log(study)
    routes = list(_routes(app))
    writes = {path for method, path in routes if method != "GET"}
    assert writes == set(BODIES), "a write route without a test body: add it to BODIES"
    assert {path for _, path in routes} >= LEAD_ONLY | RATER_ONLY
    checked = 0
    for method, path in routes:
        body = BODIES.get(path) if method != "GET" else None
        kwargs = {"json": body} if body is not None else {}
        for token in (None, "wrong-" + tokens["ana"], tokens["ana"][:-1]):  # none, wrong, almost right
            response = client_of(app, token).request(method, path, **kwargs)
            if (method, path) in PUBLIC:
                continue
            assert response.status_code == 401, (method, path, token, response.text)
            assert "token" in response.json()["detail"]
            checked += 1
        if path in RATER_ONLY:  # bo's valid token, acting as ana: 403; the lead's: 403
            for token in (tokens["bo"], tokens["lead"]):
                response = client_of(app, token).request(method, path, params={"rater": "ana"}, **kwargs)
                assert response.status_code == 403, (method, path, response.text)
        if path in LEAD_ONLY:  # a rater's valid token: 403
            response = client_of(app, tokens["bo"]).request(method, path, **kwargs)
            assert response.status_code == 403, (method, path, response.text)
    assert checked >= 3 * 12
    login = client_of(app).post("/api/login", json={"token": ""})
    assert login.status_code == 401 and "set-cookie" not in login.headers
    assert _log(study) == before  # none of it wrote anything
    assert PUBLIC == {("GET", "/"), ("GET", "/static/page.js"), ("GET", "/static/page.css"), ("POST", "/api/login")}


def test_a_client_without_a_token_cannot_act_for_a_rater_or_read_the_results(study):
    """Issue 29 on the landed code: `POST /api/undo {"rater": "victim2"}` undid their answer and showed
    their choice and comment; `replace: true` replaced it; anyone read /results."""
    Study(study).answer("victim2", 1, "right", label=2, comment="private note")
    before = _log(study)
    client = TestClient(make_app(study))
    for method, path, body in [("POST", "/api/undo", {"rater": "victim2"}),
                               ("POST", "/api/answer", {"rater": "victim2", "item_id": 1, "choice": "left",
                                                        "replace": True}),
                               ("POST", "/api/answer", {"rater": "invented", "item_id": 2, "choice": "left"}),
                               ("GET", "/api/next?rater=victim2", None), ("GET", "/results", None),
                               ("GET", "/api/results", None)]:
        response = client.request(method, path, json=body)
        assert response.status_code in (401, 403), (path, response.status_code)
        assert "private note" not in response.text
    assert _log(study) == before


def test_a_rater_cannot_undo_replace_or_read_another_raters_answers(study, tokens):
    """The attack of issue 29 on the landed code: a client naming another rater undid and replaced
    their answer and read their comment."""
    app = make_app(study)
    ana, bo = client_of(app, tokens["ana"]), client_of(app, tokens["bo"])
    ana.post("/api/answer", json={"item_id": 1, "choice": "right", "comment": "private note"})
    before = _log(study)
    for method, path, body in [("POST", "/api/undo", {"rater": "ana"}),
                               ("POST", "/api/answer", {"rater": "ana", "item_id": 1, "choice": "left",
                                                        "replace": True})]:
        for client in (bo, client_of(app)):
            response = client.request(method, path, json=body)
            assert response.status_code in (401, 403) and "private note" not in response.text
    assert bo.get("/api/next", params={"rater": "ana"}).status_code == 403
    own = bo.post("/api/undo", json={})  # bo's own undo: bo has nothing to undo; ana's answer stays
    assert own.status_code == 409 and "bo has no answer" in own.json()["detail"]
    assert _log(study) == before
    # the browser way: the link's token becomes a cookie; a forged cookie is no one
    browser = client_of(app)
    assert browser.post("/api/login", json={"token": tokens["bo"]}).json() == {"name": "bo", "role": "rater"}
    assert browser.get("/api/me").json()["name"] == "bo"
    assert browser.post("/api/undo", json={"rater": "ana"}).status_code == 403
    # a form another site could post with the cookie (were SameSite not there): not JSON, refused
    csrf = browser.post("/api/undo", content="{}", headers={"Content-Type": "text/plain"})
    assert csrf.status_code == 422
    forged = client_of(app)
    forged.cookies.set("agrl_sbs", "forged")
    assert forged.get("/api/me").status_code == 401


def test_undo_keeps_what_it_took_back_for_the_lead(study):
    store = Study(study)
    store.answer("ana", 2, "both_bad", label=2, comment="hm")
    store.undo("ana")
    with sqlite3.connect(study) as db:
        undo = db.execute("SELECT item_id, action, choice, label, comment FROM events ORDER BY seq").fetchall()[-1]
    assert undo == (2, "undo", "both_bad", 2, "hm")  # the landed code logged the undo with its content lost
    tokens = store.add_raters(["ana"])
    app = make_app(study)
    client_of(app, tokens["ana"]).post("/api/answer", json={"item_id": 3, "choice": "left", "latency_ms": 4200})
    client_of(app, tokens["ana"]).post("/api/undo", json={})
    events = client_of(app, tokens["lead"]).get("/api/events").json()
    assert [e["action"] for e in events] == ["answer", "undo", "answer", "undo"]
    assert (events[-1]["item_id"], events[-1]["choice"], events[-1]["latency_ms"]) == (3, "left", 4200)


def test_the_lead_adjudicates_disagreements_and_the_results_count_it(study, tokens):
    app = make_app(study)
    ana, bo, lead = (client_of(app, tokens[n]) for n in ("ana", "bo", "lead"))
    item = Study(study).rows()[0][0]
    ana.post("/api/answer", json={"item_id": item["id"], "choice": "left", "comment": "A says why"})
    bo.post("/api/answer", json={"item_id": item["id"], "choice": "right"})
    other = Study(study).rows()[0][1]  # agreement: not a disagreement
    for client in (ana, bo):
        client.post("/api/answer", json={"item_id": other["id"], "choice": "both_good"})
    (case,) = lead.get("/api/disagreements").json()
    assert case["id"] == item["id"] and case["adjudication"] is None
    assert [(a["rater"], a["choice"], a["comment"]) for a in case["answers"]] == [
        ("ana", "left", "A says why"), ("bo", "right", None)]
    assert "gold" not in case and set(case["left"]) == {"label", "label_name", "reasoning", "score"}
    before = lead.get("/api/results").json()["overall"]
    settled = lead.post("/api/adjudicate", json={"item_id": item["id"], "choice": "right", "label": 3,
                                                 "comment": "B read the title"})
    assert settled.status_code == 200
    assert lead.get("/api/disagreements").json()[0]["adjudication"]["choice"] == "right"
    after = lead.get("/api/results").json()
    b_side = "a" if item["flipped"] else "b"  # "right" is judge b unless the item was flipped
    assert before["win_rate"]["value"] == pytest.approx((0.5 + 0.5) / 2)  # one split item, one tie
    assert after["overall"]["win_rate"]["value"] == pytest.approx(((b_side == "b") + 0.5) / 2)
    assert after["overall"]["adjudicated"] == 1 and after["accuracy"]["items"] == 1  # the lead's label counts
    event = lead.get("/api/events").json()[-1]
    assert (event["action"], event["rater"], event["choice"], event["label"]) == ("adjudicate", "lead", "right", 3)
    refused = lead.post("/api/adjudicate", json={"item_id": 10**30, "choice": "left"})
    assert refused.status_code == 422 and "item_id" in json.dumps(refused.json())


def test_export_every_answer_as_jsonl_and_csv(study, tokens, tmp_path):
    from agrl.sbs.export import FIELDS

    app = make_app(study)
    ana, bo, lead = (client_of(app, tokens[n]) for n in ("ana", "bo", "lead"))
    ana.post("/api/answer", json={"item_id": 1, "choice": "left", "label": 4, "comment": 'say "hi", | ok',
                                  "latency_ms": 1234})
    bo.post("/api/answer", json={"item_id": 1, "choice": "both_good"})
    rows = [json.loads(line) for line in lead.get("/api/export", params={"format": "jsonl"}).text.splitlines()]
    assert [tuple(r) for r in rows] == [FIELDS, FIELDS]
    item = Study(study).rows()[0][0]
    assert rows[0] | {"at": None} == {
        "study": "study.sqlite", "item_id": 1, "pair_id": item["pair_id"], "rater": "ana",
        "shown_left": "b" if item["flipped"] else "a", "choice": "left", "verdict": "b" if item["flipped"] else "a",
        "label": 4, "comment": 'say "hi", | ok', "latency_ms": 1234, "gold": False, "gold_better": None, "at": None}
    response = lead.get("/api/export", params={"format": "csv"})
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["rater"] for r in table] == ["ana", "bo"] and table[0]["comment"] == 'say "hi", | ok'
    assert lead.get("/api/export", params={"format": "xlsx"}).status_code == 422
    for suffix in ("csv", "jsonl"):
        out = tmp_path / f"answers.{suffix}"
        result = CliRunner().invoke(cli, ["sbs", "export", str(study), "--out", str(out)])
        assert result.exit_code == 0 and "2 answers" in result.output, result.output
        assert out.read_text() == lead.get("/api/export", params={"format": suffix}).text
    bad = CliRunner().invoke(cli, ["sbs", "export", str(study), "--out", str(tmp_path / "a.txt")])
    assert bad.exit_code == 2 and "jsonl, csv" in bad.output


def test_a_first_format_study_is_upgraded_in_place_keeping_its_answers(study, tmp_path):
    from agrl.sbs.store import FIRST_SCHEMA

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.executescript(FIRST_SCHEMA)
        db.execute("ATTACH ? AS new", (str(study),))
        db.execute("INSERT INTO meta SELECT * FROM new.meta")
        db.execute("UPDATE meta SET value = '\"agrl-sbs/1\"' WHERE key = 'format'")
        db.execute("INSERT INTO items SELECT id, pair_id, query, product, stratum, weight, agree, flipped, a, b "
                   "FROM new.items")
        db.execute("INSERT INTO answers VALUES (1, 'ana', 'left', 'a', NULL, NULL, '2026-12-01', 1)")
        db.execute("INSERT INTO events VALUES (1, 1, 'ana', 'answer', 'left', NULL, NULL, '2026-12-01')")
    upgraded = Study(old)
    assert upgraded.rows()[1][0]["rater"] == "ana" and len(upgraded.events()) == 1
    assert set(upgraded.add_raters(["ana"])) == {"lead", "ana"}
    assert Study(old).meta["format"] == "agrl-sbs/2"
