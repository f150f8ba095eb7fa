"""SBS studies: creation and provenance, bad input, the API's refusals, and storage (sbs/study.py, app.py).

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_sbs_study.py
"""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from sbs_inputs import write_inputs
from typer.testing import CliRunner

from agrl.cli import app as cli
from agrl.errors import UserError
from agrl.sbs.app import make_app
from agrl.sbs.store import Refused, Study
from agrl.sbs.study import create


@pytest.fixture
def inputs(tmp_path):
    return write_inputs(tmp_path / "in")


@pytest.fixture
def study(inputs, tmp_path):
    out = tmp_path / "study.sqlite"
    create(inputs["a"], inputs["b"], inputs["pairs"], out, seed=1, raters_per_item=2)
    return out


def client_of(study, name=None, tokens=None):
    """A client holding one person's token (the lead's under "lead"), or none."""
    client = TestClient(make_app(study))
    if name is not None:
        client.headers["Authorization"] = f"Bearer {tokens[name]}"
    return client


@pytest.fixture
def tokens(study):
    return Study(study).add_raters(["ana", "bo", "cy", "done"])


def _rows(path, table):
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


# ---------------------------------------------------------------------------- create


def test_create_records_items_order_and_provenance(study, inputs):
    s = Study(study)
    items, _ = s.rows()
    assert len(items) == 12 and sum(i["agree"] for i in items) == 6
    assert {i["pair_id"] for i in items} == {f"p{i}" for i in range(12)}
    assert 0 < sum(i["flipped"] for i in items) < 12  # left/right randomised per item, recorded
    assert [i["pair_id"] for i in items] != [f"p{i}" for i in range(12)]  # shown in a shuffled order
    item = next(i for i in items if i["pair_id"] == "p1")
    assert item["a"]["label"] == 4 and item["b"]["label"] == 2 and item["b"]["reasoning"].startswith("category")
    assert item["a"]["reasoning"] is None and item["a"]["score"] == 3.5  # a score file: label and score only
    prov = s.meta["provenance"]
    assert prov["settings"]["seed"] == 1 and prov["settings"]["raters_per_item"] == 2
    assert prov["inputs"]["pairs"]["sha256"] == __import__("hashlib").sha256(inputs["pairs"].read_bytes()).hexdigest()
    assert set(prov["inputs"]["b"]["sha256"]) == {str(inputs["b"]), str(inputs["b_rows"])}
    with sqlite3.connect(study) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sampling_is_seeded_stratified_and_can_skip_or_down_weight_agreed_pairs(inputs, tmp_path):
    def items(name, **kw):
        create(inputs["a"], inputs["b"], inputs["pairs"], tmp_path / name, **kw)
        return Study(tmp_path / name).rows()[0]

    one, two = items("1.sqlite", sample=6, seed=3), items("2.sqlite", sample=6, seed=3)
    assert [(i["pair_id"], i["flipped"]) for i in one] == [(i["pair_id"], i["flipped"]) for i in two]
    skipped = items("skip.sqlite", agreed="skip")
    assert len(skipped) == 6 and not any(i["agree"] for i in skipped)
    down = items("down.sqlite", agreed="down-weight", agreed_weight=0.5, seed=0)
    assert all(i["weight"] == (2.0 if i["agree"] else 1.0) for i in down)
    assert 6 <= len(down) < 12
    # 12 pairs: families brand (4) / negation (8); 6 drawn in proportion -> 2 and 4
    strat = items("strat.sqlite", sample=6, stratify="family")
    assert sorted(i["stratum"] for i in strat) == ["brand"] * 2 + ["negation"] * 4


@pytest.mark.parametrize("break_it, message", [
    (lambda p: p["a"].write_text("".join(p["a"].read_text().splitlines(True)[:-2])), "lacks 2 of the 12 pairs (ids p10, p11)"),
    (lambda p: p["b_rows"].write_text(p["b_rows"].read_text() + json.dumps({"id": "zz", "pred": 4}) + "\n"),
     "holds 1 ids that are not in the pairs file (ids zz)"),
    (lambda p: p["a"].write_text(p["a"].read_text().replace('"label": 4', '"label": 9', 1)), "a_scores.jsonl:1: label: 9"),
    (lambda p: p["b_rows"].write_text(p["b_rows"].read_text().replace('"query 3"', '"other"')), "query: 'other'"),
])
def test_bad_judge_files_are_one_line_errors_and_write_nothing(inputs, tmp_path, break_it, message):
    break_it(inputs)
    out = tmp_path / "study.sqlite"
    result = CliRunner().invoke(cli, ["sbs", "create", "--a", str(inputs["a"]), "--b", str(inputs["b"]),
                                      "--pairs", str(inputs["pairs"]), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".study*"))


def test_a_file_that_is_not_a_study_is_refused(tmp_path, inputs):
    for path in (inputs["pairs"], tmp_path / "empty.sqlite"):
        if not path.exists():
            sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
        with pytest.raises(UserError, match="not an SBS study file"):
            Study(path)
        result = CliRunner().invoke(cli, ["sbs", "serve", str(path)])
        assert result.exit_code == 2 and "not an SBS study file" in result.output


def test_serve_binds_this_machine_unless_told_otherwise(study, monkeypatch):
    calls = []
    monkeypatch.setattr("agrl.sbs.app.serve", lambda *args: calls.append(args))
    refused = CliRunner().invoke(cli, ["sbs", "serve", str(study), "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "pass --public" in refused.output and not calls
    assert CliRunner().invoke(cli, ["sbs", "serve", str(study)]).exit_code == 0
    public = CliRunner().invoke(cli, ["sbs", "serve", str(study), "--host", "0.0.0.0", "--public"])
    assert public.exit_code == 0 and "warning: listening on 0.0.0.0" in public.output
    assert calls == [(str(study), "127.0.0.1", 8080, None), (str(study), "0.0.0.0", 8080, None)]


def test_serve_prints_a_link_per_rater_and_the_lead_and_keeps_tokens(study, monkeypatch):
    monkeypatch.setattr("agrl.sbs.app.serve", lambda *args: None)
    first = CliRunner().invoke(cli, ["sbs", "serve", str(study), "--rater", "ana", "--rater", "bo"])
    assert first.exit_code == 0, first.output
    links = dict(line.strip().rsplit(": ", 1) for line in first.output.splitlines() if "#token=" in line)
    assert set(links) == {"lead (results, adjudication, export)", "ana", "bo"}
    assert len({link.split("#token=")[1] for link in links.values()}) == 3  # one token each
    again = CliRunner().invoke(cli, ["sbs", "serve", str(study), "--rater", "cy"])  # a restart keeps the links
    assert all(link in again.output for link in links.values()) and "cy: http" in again.output
    for name in ("ANA", "Lead"):  # names differ in more than case; the lead's name is taken
        result = CliRunner().invoke(cli, ["sbs", "serve", str(study), "--rater", name])
        assert (result.exit_code == 0) == (name == "ANA"), result.output
    tokens = Study(study).add_raters([])
    assert "ANA" not in tokens and set(tokens) == {"lead", "ana", "bo", "cy"}


# ---------------------------------------------------------------------------- the API


def test_rater_flow_answer_undo_replace_and_k_raters(study, tokens):
    client, bo, cy = (client_of(study, name, tokens) for name in ("ana", "bo", "cy"))
    first = client.get("/api/next").json()
    assert first["progress"] == {"done": 0, "total": 12}
    item = first["item"]
    assert set(item) == {"id", "query", "product", "left", "right", "previous"}  # no judge names: blinded
    ok = client.post("/api/answer", json={"item_id": item["id"], "choice": "left", "label": 3, "latency_ms": 1500})
    assert ok.status_code == 200 and ok.json()["progress"]["done"] == 1
    assert client.get("/api/next").json()["item"]["id"] != item["id"]
    undone = client.post("/api/undo", json={}).json()
    assert undone["item"]["id"] == item["id"] and undone["item"]["previous"]["label"] == 3
    assert client.get("/api/next").json()["item"]["id"] == item["id"]  # resumes there
    client.post("/api/answer", json={"rater": "ana", "item_id": item["id"], "choice": "both_bad"})
    replaced = client.post("/api/answer", json={"item_id": item["id"], "choice": "right", "replace": True})
    assert replaced.json()["replaced"] is True
    actions = [row[3] for row in _rows(study, "events")]
    assert actions == ["answer", "undo", "answer", "replace"]  # every step kept, in order
    (answer,) = _rows(study, "answers")
    flipped = next(i["flipped"] for i in Study(study).rows()[0] if i["id"] == item["id"])
    assert answer[2] == "right" and answer[3] == ("a" if flipped else "b")  # stored in the judges' terms
    # k = 2: a second rater gets the item, a third does not
    bo.post("/api/answer", json={"item_id": item["id"], "choice": "left"})
    third = cy.post("/api/answer", json={"item_id": item["id"], "choice": "left"})
    assert third.status_code == 409 and "already answered by 2" in third.json()["detail"]
    assert cy.get("/api/next").json()["item"]["id"] != item["id"]


@pytest.mark.parametrize("body, status, message", [
    ({"rater": "ana", "item_id": 999, "choice": "left"}, 404, "no such item"),  # foreign item id
    ({"rater": "ana", "choice": "left"}, 422, "item_id"),  # missing item id
    ({"rater": "ana", "item_id": "1", "choice": "left"}, 422, "item_id"),  # not an integer
    ({"rater": "ana", "item_id": 1, "choice": "maybe"}, 422, "choice"),
    ({"rater": "ana", "item_id": 1, "choice": "left", "label": 7}, 422, "label"),
    ({"rater": "ana", "item_id": 10**30, "choice": "left"}, 422, "item_id"),  # over SQLite's integer
    ({"rater": "ana", "item_id": -1, "choice": "left"}, 422, "item_id"),
    ({"rater": "ana", "item_id": 1, "choice": "left", "latency_ms": -5}, 422, "latency_ms"),
    ({"rater": "ana", "item_id": 1, "choice": "left", "admin": True}, 422, "admin"),  # unknown field
    ({"rater": "ana", "item_id": 1, "choice": "left", "comment": "x" * 2001}, 422, "comment"),
    ({"rater": "done", "item_id": 1, "choice": "left"}, 409, "answered it already"),  # a second answer
    ("{not json", 422, ""),
    ([1, 2], 422, ""),
])
def test_bad_requests_are_4xx_with_a_message_and_write_nothing(study, tokens, body, status, message):
    client = client_of(study, "done", tokens)
    client.post("/api/answer", json={"item_id": 1, "choice": "left"})
    if isinstance(body, dict) and body.get("rater") == "ana":
        client = client_of(study, "ana", tokens)
    before = (_rows(study, "answers"), _rows(study, "events"))
    if isinstance(body, str):
        response = client.post("/api/answer", content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post("/api/answer", json=body)
    assert response.status_code == status, response.text
    assert message in json.dumps(response.json()["detail"])
    assert (_rows(study, "answers"), _rows(study, "events")) == before


def test_an_item_id_beyond_sqlite_integers_is_a_4xx_not_an_overflow(study):
    """The landed code answered item_id 10**30 with a plain-text 500 (SQLite's OverflowError)."""
    with pytest.raises(Refused) as refused:
        Study(study).answer("ana", 10**30, "left")
    assert refused.value.status == 404
    client = client_of(study, "ana", Study(study).add_raters(["ana"]))
    for body in ({"item_id": 10**30, "choice": "left"}, {"item_id": 2**63, "choice": "left"}):
        response = client.post("/api/answer", json=body)
        assert response.status_code == 422 and "item_id" in json.dumps(response.json()["detail"])
    assert _rows(study, "events") == []


def test_undo_with_nothing_to_undo_and_the_results_pages(study, tokens):
    client, lead = client_of(study, "ana", tokens), client_of(study, "lead", tokens)
    assert client.post("/api/undo", json={}).status_code == 409
    assert _rows(study, "events") == []
    for item in Study(study).rows()[0][:4]:
        client.post("/api/answer", json={"item_id": item["id"], "choice": "left"})
    summary = lead.get("/api/results").json()
    assert summary["answered_items"] == 4 and summary["overall"]["answers"] == 4
    page = lead.get("/results")
    assert page.status_code == 200 and "win rate of B" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_report_command_writes_markdown_html_json_and_links_a_run_report(study, tokens, tmp_path):
    client_of(study, "ana", tokens).post("/api/answer", json={"item_id": 1, "choice": "right"})
    out = tmp_path / "run_report"
    out.mkdir()
    (out / "report.md").write_text("# a run\n")
    for _ in range(2):  # the link is added once
        result = CliRunner().invoke(cli, ["sbs", "report", str(study), "--out", str(out), "--resamples", "100"])
        assert result.exit_code == 0, result.output
    markdown = (out / "sbs.md").read_text()
    assert "| all | 1 | 1 | " in markdown and "| – (under 10 items) |" in markdown  # one item: no interval
    assert json.loads((out / "sbs.json").read_text())["answered_items"] == 1
    assert (out / "sbs.html").read_text().startswith("<!doctype html>")
    assert (out / "report.md").read_text().count("## Side-by-side study") == 1


# ---------------------------------------------------------------------------- storage: kill -9


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(study, port):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "agrl", "sbs", "serve", str(study), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stderr.read().decode()[-2000:]}")


def test_kill_9_between_answers_loses_nothing(study, tokens):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(study, port)
    given = []
    ana = {"Authorization": f"Bearer {tokens['ana']}"}
    try:
        for choice in ("left", "right", "both_good"):
            item = httpx.get(f"{url}/api/next", headers=ana).json()["item"]
            r = httpx.post(f"{url}/api/answer", json={"item_id": item["id"], "choice": choice}, headers=ana)
            assert r.status_code == 200
            given.append((item["id"], choice))
    finally:
        server.send_signal(signal.SIGKILL)  # no shutdown, no handler runs: only what was committed is there
        server.wait()
    stored = [(row[0], row[2]) for row in sorted(_rows(study, "answers"), key=lambda r: r[7])]
    assert stored == given
    server = _start(study, port)  # a restarted server resumes the rater after the last answer
    try:
        assert httpx.get(f"{url}/api/next", headers=ana).json()["progress"]["done"] == 3
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()


def test_a_model_directory_is_run_on_the_pairs(inputs, tmp_path, tiny_model_dir):
    from agrl.data.records import load_records
    from agrl.model.score import Scorer

    out = tmp_path / "study.sqlite"
    create(tiny_model_dir, inputs["b"], inputs["pairs"], out)
    study = Study(out)
    assert study.meta["provenance"]["inputs"]["a"]["kind"] == "model"
    expected = Scorer(tiny_model_dir).score(load_records(inputs["pairs"]))
    by_pair = {i["pair_id"]: i["a"] for i in study.rows()[0]}
    for index, result in enumerate(expected):
        got = by_pair[f"p{index}"]
        assert got["label"] == result.label and got["score"] == pytest.approx(result.score)
        assert got["reasoning"] is None  # one pass: label and score, no reasoning


def test_raters_at_once_never_exceed_k_on_an_item(study):
    """Eight raters answer the same item at the same moment; k = 2: two are taken, six refused (409)."""
    from concurrent.futures import ThreadPoolExecutor

    store = Study(study)

    def attempt(index):
        try:
            store.answer(f"rater{index}", 1, "left")
            return 200
        except Refused as err:
            return err.status

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [200, 200] + [409] * 6
    assert len(_rows(study, "answers")) == 2 and len(_rows(study, "events")) == 2


def test_the_pairs_are_read_under_the_scheme_their_manifest_names(inputs, tmp_path):
    """Labels of one scheme are never read as another's: the import's manifest.json names the scheme."""
    (inputs["pairs"].parent / "manifest.json").write_text(json.dumps({"scheme": "three_level"}))
    out = tmp_path / "s.sqlite"
    with pytest.raises(UserError, match="--scheme default: .*labelled in scheme 'three_level'.*manifest.json"):
        create(inputs["a"], inputs["b"], inputs["pairs"], out, scheme="default")
    result = CliRunner().invoke(cli, ["sbs", "create", "--a", str(inputs["a"]), "--b", str(inputs["b"]),
                                      "--pairs", str(inputs["pairs"]), "--out", str(out)])
    assert result.exit_code == 2 and "pairs.jsonl:1: label" in result.output  # 4 is not a three_level code
    assert not out.exists()


# ---------------------------------------------------------------------------- issue 29: gold, fields, bad numbers


@pytest.mark.parametrize("key, field, bad", [("a", "score", "NaN"), ("a", "score", "1e400"),
                                             ("b_rows", "expected_relevance", "-Infinity")])
def test_non_finite_scores_are_refused_at_create_naming_file_line_field(inputs, tmp_path, key, field, bad):
    lines = inputs[key].read_text().splitlines(True)
    row = json.loads(lines[1])
    row[field] = 12345.5
    lines[1] = json.dumps(row).replace("12345.5", bad) + "\n"  # what Python's json writes for nan and inf
    inputs[key].write_text("".join(lines))
    out = tmp_path / "study.sqlite"
    result = CliRunner().invoke(cli, ["sbs", "create", "--a", str(inputs["a"]), "--b", str(inputs["b"]),
                                      "--pairs", str(inputs["pairs"]), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"{inputs[key].name}:2: {field}: " in result.output and "not a finite number" in result.output
    assert not out.exists()


def _gold_file(inputs, rows):
    path = inputs["pairs"].parent / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gold_items_are_mixed_in_unmarked_open_to_every_rater_and_left_out_of_the_win_rate(inputs, tmp_path):
    # p1, p3: A says 4 (right: the pairs' label), B says 2 -> better "a"; p5 given as "b" outright
    gold = _gold_file(inputs, [{"id": "p1", "label": 4}, {"id": "p3", "label": 4}, {"id": "p5", "better": "b"}])
    out = tmp_path / "study.sqlite"
    result = CliRunner().invoke(cli, ["sbs", "create", "--a", str(inputs["a"]), "--b", str(inputs["b"]),
                                      "--pairs", str(inputs["pairs"]), "--out", str(out), "--gold", str(gold),
                                      "--gold-share", "0.2"])
    assert result.exit_code == 0 and "(3 gold)" in result.output, result.output  # 0.2 * 12 / 0.8 -> 3
    study = Study(out)
    items = study.rows()[0]
    golds = [i for i in items if i["gold"]]
    assert len(items) == 12 and len(golds) == 3 and {i["pair_id"] for i in golds} == {"p1", "p3", "p5"}
    assert all(i["gold"]["better"] == ("b" if i["pair_id"] == "p5" else "a") for i in golds)
    tokens = study.add_raters(["ana", "bo", "cy"])
    clients = {n: client_of(out, n, tokens) for n in ("ana", "bo", "cy")}
    seen = set()
    for name, client in clients.items():  # k = 1, yet every rater gets every gold item
        while (item := client.get("/api/next").json()["item"]) is not None:
            assert set(item) == {"id", "query", "product", "left", "right", "previous"}  # unmarked
            seen.add((name, item["id"]))
            gold_item = next((g for g in golds if g["id"] == item["id"]), None)
            right_side = "left" if (gold_item and gold_item["gold"]["better"] == "a") != bool(
                gold_item and gold_item["flipped"]) else "right"
            choice = right_side if name != "cy" or not gold_item else "both_bad"  # cy misses every gold item
            assert client.post("/api/answer", json={"item_id": item["id"], "choice": choice}).status_code == 200
    for name in clients:
        assert {g["id"] for g in golds} <= {i for n, i in seen if n == name}
    summary = client_of(out, "lead", tokens).get("/api/results").json()
    assert summary["items"] == 9 and summary["overall"]["answers"] == 9  # gold answers count nowhere else
    assert {n: g["accuracy"] for n, g in summary["gold"]["raters"].items()} == {"ana": 1.0, "bo": 1.0, "cy": 0.0}
    report = CliRunner().invoke(cli, ["sbs", "report", str(out), "--min-gold-accuracy", "0.5", "--format", "json",
                                      "--resamples", "50"])
    data = json.loads(report.output[: report.output.rindex("}") + 1])
    assert data["gold"]["left_out"] == ["cy"] and "cy" not in data["raters"]
    assert data["overall"]["answers"] == 9 - sum(1 for n, i in seen if n == "cy" and i not in {g["id"] for g in golds})
    markdown = (tmp_path / "study_report" / "sbs.md").read_text()
    assert "## Raters on the gold items" in markdown and "| cy | 3 | 0.000 | – | yes |" in markdown


def test_a_gold_file_of_every_pair_gives_some_gold_items_and_leaves_the_rest_ordinary(inputs, tmp_path):
    gold = _gold_file(inputs, [{"id": f"p{i}", "label": 4} for i in range(12)])
    create(inputs["a"], inputs["b"], inputs["pairs"], tmp_path / "s.sqlite", gold=gold, gold_share=0.25, sample=6)
    items = Study(tmp_path / "s.sqlite").rows()[0]
    assert len(items) == 8 and sum(bool(i["gold"]) for i in items) == 2  # 0.25 * 6 / 0.75
    as_csv = gold.with_suffix(".csv")
    as_csv.write_text("id,label\np1,4\n")
    with pytest.raises(UserError, match="give a JSONL file"):
        create(inputs["a"], inputs["b"], inputs["pairs"], tmp_path / "c.sqlite", gold=as_csv)


@pytest.mark.parametrize("rows, message", [
    ([{"id": "nope", "label": 4}], "gold.jsonl:1: id: 'nope' is not a pair"),
    ([{"id": "p1"}], "gold.jsonl:1: better, label"),
    ([{"id": "p1", "better": "left"}], "gold.jsonl:1: better: 'left'"),
    ([{"id": "p1", "label": 4}, {"id": "p1", "label": 4}], "gold.jsonl:2: id: 'p1' repeats"),
])
def test_bad_gold_files_are_one_line_errors(inputs, tmp_path, rows, message):
    with pytest.raises(UserError, match=re.escape(message)):
        create(inputs["a"], inputs["b"], inputs["pairs"], tmp_path / "s.sqlite", gold=_gold_file(inputs, rows))


def test_raters_see_the_chosen_fields_entities_decoded_and_no_identifiers(inputs, tmp_path):
    rows = [json.loads(line) for line in inputs["pairs"].read_text().splitlines()]
    for row in rows:
        row["product"] |= {"product_uid": 100001, "title": "Tom &amp; Jerry &lt;b&gt; drill"}
    inputs["pairs"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    create(inputs["a"], inputs["b"], inputs["pairs"], tmp_path / "all.sqlite")
    study = Study(tmp_path / "all.sqlite")
    item = study.next_for("ana")["item"]
    assert "product_uid" not in item["product"] and item["product"]["title"] == "Tom & Jerry <b> drill"
    assert client_of(study.path, "ana", study.add_raters(["ana"])).get("/api/next").json()["item"] == item
    assert "&amp;" in study.rows()[0][0]["product"]  # stored as given: only the display decodes
    create(inputs["a"], inputs["b"], inputs["pairs"], tmp_path / "some.sqlite", show=["title", "price"])
    some = Study(tmp_path / "some.sqlite")
    item = client_of(some.path, "ana", some.add_raters(["ana"])).get("/api/next").json()["item"]
    assert list(item["product"]) == ["title", "price"]
    about = client_of(some.path, "ana", some.add_raters([])).get("/api/study").json()
    assert about["score_range"] == "1–4" and "expected label" in about["score"]
    result = CliRunner().invoke(cli, ["sbs", "create", "--a", str(inputs["a"]), "--b", str(inputs["b"]),
                                      "--pairs", str(inputs["pairs"]), "--out", str(tmp_path / "x.sqlite"),
                                      "--show", "title,colour"])
    assert result.exit_code == 2 and "no product has a field 'colour'" in result.output


def test_sbs_md_escapes_what_raters_and_queries_bring(inputs, tmp_path):
    """A rater name or a query (a stratum) holding `|` or HTML must not shift or inject into sbs.md's tables."""
    rows = [json.loads(line) for line in inputs["pairs"].read_text().splitlines()]
    for row in rows:
        row["query"] = f"drill | saw <img src=x onerror=alert(1)> {row['id']}"
    inputs["pairs"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("b_rows",):
        fixed = [json.loads(line) for line in inputs[name].read_text().splitlines()]
        for row in fixed:
            row.pop("query", None)
        inputs[name].write_text("".join(json.dumps(r) + "\n" for r in fixed))
    out = tmp_path / "s.sqlite"
    create(inputs["a"], inputs["b"], inputs["pairs"], out, stratify="query", raters_per_item=2)
    study = Study(out)
    for item_id in (1, 2, 3):
        study.answer("x|y <b>bold</b>", item_id, "left")
        study.answer("zo", item_id, "right")
    CliRunner().invoke(cli, ["sbs", "report", str(out), "--out", str(tmp_path / "r"), "--resamples", "20"])
    markdown = (tmp_path / "r" / "sbs.md").read_text()
    assert "<b>" not in markdown and "<img" not in markdown
    tables = [block.splitlines() for block in markdown.split("\n\n") if block.startswith("|")]
    assert len(tables) >= 3
    for table in tables:  # every row has its header's number of columns (unescaped pipes)
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in table}
        assert len(widths) == 1, table
    assert "x\\|y &lt;b&gt;bold&lt;/b&gt;" in markdown
