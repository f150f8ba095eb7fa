"""`agrl score --ray` (score_ray.py) on a real local Ray cluster (2 CPUs) that this module starts and stops.

Against single-process `agrl score` (score.score_file) on the same 2,000 pairs in JSONL, Parquet and CSV:
equal results, every pair exactly once, bad rows rejected by file and line; then a worker killed mid-run
and a driver killed mid-run (then rerun) each end with every pair exactly once.

    .venv/bin/python -m pytest -q tests/test_score_ray.py
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from agrl.cli import app
from agrl.model.score import Scorer, model_fingerprint, score_file

ray = pytest.importorskip("ray", reason='needs Ray Data: pip install "agrl[cluster]"')
from test_score import make_rows

from agrl.errors import UserError
from agrl.model.score_ray import claim_outdir, score_catalog

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs with a small object store, this process its first driver; its address
    lets a CLI subprocess join it as a second driver."""
    ray.init(num_cpus=2, object_store_memory=200_000_000, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


BAD_LINES = {  # a.jsonl's bad rows: line -> field, as single-process `agrl score` names them
    351: "json", 352: "product.title", 353: "id",  # 353 repeats line 302's id, in the same shard
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """2,000 pairs in three files (JSONL with 3 bad lines, Parquet, CSV) and single-process `agrl score`
    results for them: id -> result line, and the rejects."""
    folder = tmp_path_factory.mktemp("catalog")
    rows = make_rows(2000)
    a, b, c = rows[:1000], rows[1000:1600], rows[1600:]
    bad = ['{"query": "cut\n', json.dumps({"query": "q", "product": {}}) + "\n",
           json.dumps({"id": "r301", "query": "dup", "product": {"title": "x"}}) + "\n"]
    lines = [json.dumps(r) + "\n" for r in a]
    (folder / "a.jsonl").write_text("".join(lines[:350] + bad + lines[350:]))
    pd.DataFrame(b).to_parquet(folder / "b.parquet")
    flat = [{"id": r.get("id"), "query": r["query"], "title": r["product"]["title"], "brand": r["product"]["brand"],
             "attributes": json.dumps(r["product"]["attributes"]) if "attributes" in r["product"] else None}
            for r in c]
    pd.DataFrame(flat).to_csv(folder / "c.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def reference(catalog, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    scorer = Scorer(tiny_model_dir, batch_size=16, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one actor has: two threads on a loaded 2-core box run ~20x slower
    results, rejects = {}, []
    for name in ("a.jsonl", "b.parquet", "c.csv"):
        score_file(scorer, catalog / name, out / f"{name}.out.jsonl", progress=False)
        for line in (out / f"{name}.out.jsonl").read_text().splitlines():
            row = json.loads(line)
            results[row["id"]] = row
        rejects += [json.loads(line) for line in (out / f"{name}.out.jsonl.rejects.jsonl").read_text().splitlines()]
    torch.set_num_threads(threads)
    assert len(results) == 2000
    return results, rejects


def read_shards(outdir: Path) -> list[dict]:
    frame = pd.read_parquet(outdir / "shards")
    return frame.to_dict(orient="records")


def assert_same_as_single(outdir: Path, reference, model_dir) -> None:
    """Every pair exactly once, each equal to single-process `agrl score` (floats to 1e-5), the same fields
    plus the model's fingerprint; the same rejects by file and line."""
    want, want_rejects = reference
    got = read_shards(outdir)
    ids = [g["id"] for g in got]
    assert len(ids) == len(set(ids)) == 2000 and set(ids) == set(want)
    fingerprint = model_fingerprint(model_dir)
    for g in got:
        w = want[g["id"]]
        assert set(g) == set(w) | {"fingerprint"} and g["fingerprint"] == fingerprint
        assert (g["label"], g["label_name"], g["tier"]) == (w["label"], w["label_name"], w["tier"])
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)
    rejects = [json.loads(line) for line in (outdir / "rejects.jsonl").read_text().splitlines()]
    assert sorted((r["source"], r["line"], r["field"]) for r in rejects) == sorted(
        (r["source"], r["line"], r["field"]) for r in want_rejects)
    assert {(Path(r["source"]).name, r["line"]): r["field"] for r in rejects} == {
        ("a.jsonl", line): name for line, name in BAD_LINES.items()}
    assert not list((outdir / "shards").glob(".*")), "a temporary file was left behind"


def test_equals_single_process_score_every_pair_once(cluster, catalog, reference, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    report = score_catalog(tiny_model_dir, str(catalog), out, ray_address="auto", actors=2, batch_size=16,
                           rows_per_shard=250)
    assert (report.shards, report.resumed, report.scored, report.rejected, report.rows) == (10, 0, 2000, 3, 2000)
    assert report.first_rejects[0].startswith(f"{catalog / 'a.jsonl'}:351: json: ")
    assert_same_as_single(out, reference, tiny_model_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["maker"]["fingerprint"] == model_fingerprint(tiny_model_dir)
    # Done is done: a rerun finds every shard and scores nothing (no cluster work at all).
    again = score_catalog(tiny_model_dir, str(catalog), out, ray_address="auto", rows_per_shard=250)
    assert (again.resumed, again.scored) == (10, 0)
    # JSONL shards: the same lines as `agrl score` writes, plus the fingerprint.
    lines_out = tmp_path / "jsonl"
    score_catalog(tiny_model_dir, str(catalog / "c.csv"), lines_out, ray_address="auto", actors=1, fmt="jsonl",
                  rows_per_shard=300)
    got = [json.loads(line) for path in sorted((lines_out / "shards").glob("*.jsonl"))
           for line in path.read_text().splitlines()]
    assert len(got) == 400 and len({g["id"] for g in got}) == 400
    for g in got:
        w = reference[0][g["id"]]
        assert list(g) == [*w, "fingerprint"] and (g["label"], g["tier"]) == (w["label"], w["tier"])
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)


def shard_workers() -> list[int]:
    """Pids of this process's Ray actor workers scoring shards (the cluster's processes are our children)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "ShardScorer" in title and _descends_from(parent, os.getpid()):
            pids.append(int(proc.name))
    return pids


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def test_a_worker_killed_mid_run_is_retried_and_no_pair_is_lost_or_doubled(
        cluster, catalog, reference, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    done: dict = {}
    run = threading.Thread(target=lambda: done.update(report=score_catalog(
        tiny_model_dir, str(catalog), out, ray_address="auto", actors=2, batch_size=16, rows_per_shard=100)))
    run.start()
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and run.is_alive():
        if len(list((out / "shards").glob("*.parquet"))) >= 2 and (pids := shard_workers()):
            shards_then = len(list((out / "shards").glob("*.parquet")))
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    run.join(timeout=300)
    assert killed is not None and shards_then < 21, "no worker was killed mid-run"
    assert "report" in done, "the run did not finish after the kill"
    assert not Path(f"/proc/{killed}").exists()
    assert done["report"].rows == 2000 and done["report"].shards == 21
    assert_same_as_single(out, reference, tiny_model_dir)


def test_a_killed_driver_reruns_to_every_pair_once_and_refuses_another_model(
        cluster, catalog, reference, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "agrl", "score", "--ray", cluster, "--model", str(tiny_model_dir), "--input",
           str(catalog / "*"), "--output", str(out), "--rows-per-shard", "100", "--actors", "1", "--batch-size", "16"]
    env = os.environ | {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list((out / "shards").glob("*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(list((out / "shards").glob("*.parquet")))
    assert 2 <= before < 21, "the driver was not killed mid-run"
    rerun = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    said = re.search(r"21 shards, (\d+) already done; scored (\d+), rejected 3 .*; 2000 results in",
                     " ".join(rerun.stderr.split()))  # rich wraps the line at the terminal's width
    assert said and int(said[1]) >= before and int(said[2]) <= 2000 - 100 * before, rerun.stderr
    assert_same_as_single(out, reference, tiny_model_dir)
    # Another model's run into the same folder is refused before it joins the cluster.
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"note": "another model"}))
    result = CliRunner().invoke(app, ["score", "--ray", cluster, "--model", str(other), "--input", str(catalog),
                                      "--output", str(out), "--rows-per-shard", "100"])
    assert result.exit_code == 2 and "resume with the same model" in result.output, result.output


def test_cli_refusals_name_the_option(tmp_path, tiny_model_dir, catalog):
    base = ["score", "--ray", "local", "--model", str(tiny_model_dir), "--output", str(tmp_path / "out")]
    for extra, says in ((["--input", str(catalog), "--shard", "1/2"], "--shard: not with --ray"),
                        (["--input", str(tmp_path / "none" / "*.jsonl")], "no records files there"),
                        (["--input", str(catalog), "--format", "csv"], "--format csv"),
                        (["--input", str(catalog), "--actors", "0"], "--actors must be >= 1")):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and says in result.output, (extra, result.output)
    # Shards with no manifest are nobody's known output: refused before any scoring.
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "shards" / "x.parquet").write_bytes(b"")
    result = CliRunner().invoke(app, base + ["--input", str(catalog)])
    assert result.exit_code == 2 and "no manifest.json" in result.output, result.output


def test_a_rerun_with_other_options_or_a_changed_input_is_refused(tmp_path):
    maker = {"model": "/m", "fingerprint": "f1", "scheme": "default", "codes": [4, 3, 2, 1], "tier_threshold": 0.6}
    plan = {"format": "parquet", "rows_per_shard": 100, "shards": 3, "inputs": [{"path": "/in/a.jsonl", "bytes": 10}]}
    claim_outdir(tmp_path, maker, plan)
    claim_outdir(tmp_path, maker, plan | {"inputs": plan["inputs"] + [{"path": "/in/b.jsonl", "bytes": 5}]})
    for other, says in ((plan | {"rows_per_shard": 50}, "--rows-per-shard 100"),
                        (plan | {"format": "jsonl"}, "--format parquet"),
                        (plan | {"inputs": [{"path": "/in/a.jsonl", "bytes": 11}]}, "changed size")):
        with pytest.raises(UserError, match=says):
            claim_outdir(tmp_path, maker, other)
    with pytest.raises(UserError, match="tier_threshold"):
        claim_outdir(tmp_path, maker | {"tier_threshold": 0.7}, plan)
