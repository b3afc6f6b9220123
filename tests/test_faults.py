"""Fault injection: a job killed (SIGKILL) at each point that matters, a worker process
killed in a multi-process run, and a full disk. After each: no complete-looking artifact
from the failed run, the previous artifact intact and loadable, and a re-run that gives
the bytes of a clean run, with the leftovers gone.

Kills are real: `PREPRO_FAILPOINTS` (pipelines/failpoints.py) makes the process that
reaches the point SIGKILL itself, so nothing gets to clean up, as in an OOM kill.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import prepro
from conftest import snapshot, state_path
from pipelines import failpoints
from pipelines.analyze import run_analyze
from prepro.spec import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {"features": {
    "review": {"source": "review", "layer": "TextVectorization", "config": {"max_tokens": 50}},
    "carrier": {"source": "carrier", "layer": "StringLookup"},
    "fare": {"source": "fare", "layer": "Normalization"},
    "delay": {"source": "delay", "layer": "Discretization", "config": {"num_bins": 4}},
}}


def write_inputs(folder, rows, seed):
    os.makedirs(folder, exist_ok=True)
    words = ["late", "crew", "seat", "meal", "gate", "bag", "delay", "on", "time", "great"]
    for part in range(2):
        with open(os.path.join(folder, f"part-{part}.csv"), "w") as f:
            f.write("review,carrier,fare,delay\n")
            for i in range(rows):
                k = (i * 7 + part * 3 + seed) % 97
                f.write(f"{words[k % 10]} {words[(k * 3) % 10]} {words[(k + seed) % 10]},"
                        f"C{k % (5 + seed)},{k * 1.5 + seed},{(k * k) % 31}\n")
    return os.path.join(folder, "*.csv")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Spec file, old and new inputs, and a clean run of the new inputs to compare with."""
    d = tmp_path_factory.mktemp("faults")
    spec = d / "spec.json"  # YAML is a superset of JSON
    spec.write_text(json.dumps(SPEC))
    old, new = write_inputs(d / "old", 300, 1), write_inputs(d / "new", 400, 2)
    clean = str(d / "clean")
    run_analyze(load_spec(str(spec)), [new], "csv", clean, golden_rows=0)
    return {"dir": d, "spec": str(spec), "old": old, "new": new, "clean": clean}


def published(folder):
    """The manifest and the state files it names (what a reader sees)."""
    files = {"manifest.json": open(os.path.join(folder, "manifest.json"), "rb").read()}
    for relpath in json.loads(files["manifest.json"])["files"]:
        files[relpath] = open(state_path(folder, relpath), "rb").read()
    return files


def cli(setup, output, *extra, env=None, golden_rows=0):
    command = [sys.executable, "-m", "pipelines.cli", "analyze", "--spec", setup["spec"], "--input", setup["new"],
               "--format", "csv", "--output", output, "--golden-rows", str(golden_rows), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def previous_artifact(setup, name):
    out = str(setup["dir"] / name)
    shutil.rmtree(out, ignore_errors=True)
    run_analyze(load_spec(setup["spec"]), [setup["old"]], "csv", out, golden_rows=0)
    return out, published(out), prepro.load(out).vocabulary("carrier")


def assert_only_one_manifest(folder):
    manifests = [p for p in snapshot(folder) if os.path.basename(p) == "manifest.json"]
    assert manifests == ["manifest.json"], f"a complete-looking artifact was left behind: {manifests}"


def assert_rerun_is_clean(setup, out, keep_state_dir):
    run_analyze(load_spec(setup["spec"]), [setup["new"]], "csv", out, golden_rows=0)
    assert published(out) == published(setup["clean"])
    new_state_dir = json.loads(open(os.path.join(out, "manifest.json")).read())["state_dir"]
    expected = {"manifest.json", new_state_dir} | ({keep_state_dir} if keep_state_dir else set())
    assert sorted(os.listdir(out)) == sorted(expected)  # leftovers gone


@pytest.mark.parametrize("point", [p for p in failpoints.POINTS if p not in ("golden", "kept_state", "base")])
def test_killed_job_leaves_the_previous_artifact_and_a_rerun_is_clean(setup, point):
    out, before, vocabulary = previous_artifact(setup, f"killed-{point}")
    old_state_dir = json.loads(before["manifest.json"])["state_dir"]
    result = cli(setup, out, env={"PREPRO_FAILPOINTS": point})
    assert result.returncode == -9, (result.returncode, result.stderr[-2000:])
    assert_only_one_manifest(out)
    if point == "publish.cleanup":
        # Killed after the commit point: the new artifact is complete and is the clean one;
        # the re-run removes the older state directory it left.
        assert published(out) == published(setup["clean"])
        keep = None
    else:
        assert published(out) == before
        assert prepro.load(out).vocabulary("carrier") == vocabulary
        keep = old_state_dir
        leftovers = set(os.listdir(out)) - {"manifest.json", old_state_dir}
        assert leftovers, "the kill left nothing behind: the failpoint was not reached"
    assert_rerun_is_clean(setup, out, keep)


def test_job_killed_while_writing_the_kept_state(setup):
    out, before, vocabulary = previous_artifact(setup, "killed-kept-state")
    result = cli(setup, out, "--keep-state", env={"PREPRO_FAILPOINTS": "kept_state"})
    assert result.returncode == -9, (result.returncode, result.stderr[-2000:])
    assert_only_one_manifest(out)
    assert published(out) == before and prepro.load(out).vocabulary("carrier") == vocabulary
    assert_rerun_is_clean(setup, out, json.loads(before["manifest.json"])["state_dir"])


@pytest.mark.parametrize("point", ["base", "publish.manifest"])
def test_an_update_in_place_killed_leaves_its_base_and_a_rerun_is_a_full_runs_bytes(setup, point):
    out = str(setup["dir"] / f"killed-update-{point}")
    shutil.rmtree(out, ignore_errors=True)
    run_analyze(load_spec(setup["spec"]), [setup["old"]], "csv", out, golden_rows=0, keep_state=True)
    before = published(out)
    result = cli(setup, out, "--base", out, env={"PREPRO_FAILPOINTS": point})
    assert result.returncode == -9, (result.returncode, result.stderr[-2000:])
    assert_only_one_manifest(out)
    assert published(out) == before
    rerun = cli(setup, out, "--base", out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    full = str(setup["dir"] / f"full-{point}")
    run_analyze(load_spec(setup["spec"]), [setup["old"], setup["new"]], "csv", full, golden_rows=0, keep_state=True)
    state = lambda files: {k: v for k, v in files.items() if k != "manifest.json" and not k.startswith("delay/")}
    assert state(published(out)) == state(published(full))  # (delay: a quantile sketch, within its bound)


def test_job_killed_while_recording_golden_rows(setup):
    out, before, vocabulary = previous_artifact(setup, "killed-golden")
    result = cli(setup, out, env={"PREPRO_FAILPOINTS": "golden"}, golden_rows=4)
    assert result.returncode == -9, result.stderr[-2000:]
    assert_only_one_manifest(out)
    assert published(out) == before and prepro.load(out).vocabulary("carrier") == vocabulary


def test_killed_worker_process_fails_the_job_cleanly(setup):
    """A Beam worker SIGKILLed while counting: the job stops with one clear line, the
    previous artifact stays, and a re-run with two workers gives the clean bytes."""
    out, before, _ = previous_artifact(setup, "killed-worker")
    workers = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    result = cli(setup, out, *workers, env={"PREPRO_FAILPOINTS": "count"})
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prepro analyze: error: ") and "worker" in last, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert_only_one_manifest(out)
    assert published(out) == before
    rerun = cli(setup, out, *workers)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert published(out) == published(setup["clean"])


FULL_DISK_SCRIPT = textwrap.dedent("""
    import json, os, subprocess, sys
    out, spec, old, new, room = sys.argv[1:6]
    def analyze(inputs):
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", spec, "--input", inputs,
                               "--format", "csv", "--output", out, "--golden-rows", "0"],
                              capture_output=True, text=True)
    def tree():
        found = {}
        for d, _, names in os.walk(out):
            for n in names:
                p = os.path.join(d, n)
                found[os.path.relpath(p, out)] = open(p, "rb").read().decode("latin-1")
        return found
    first = analyze(old)
    before = tree()
    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
    with open(os.path.join(out, "filler"), "wb") as f:  # leaves too little room for the next job
        f.write(b"x" * (free - int(room)))
    full = analyze(new)
    during = tree()
    os.remove(os.path.join(out, "filler"))
    rerun = analyze(new)
    print(json.dumps({"first": first.returncode, "full": full.returncode, "stderr": full.stderr,
                      "rerun": rerun.returncode, "rerun_stderr": rerun.stderr, "before": before,
                      "during": during, "after": tree()}))
""")


def test_full_disk_fails_cleanly_and_keeps_the_previous_artifact(setup):
    """The output on a 1 MB tmpfs (a mount namespace of its own, so nothing is left
    mounted), filled to 8 KB of free space before the second job: ENOSPC while writing."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.fail("this test needs user and mount namespaces (unshare -rm) to mount a small tmpfs")
    out = setup["dir"] / "full-disk"
    out.mkdir(exist_ok=True)
    script = setup["dir"] / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    shell = (f"mount -t tmpfs -o size=1m tmpfs {out} && exec {sys.executable} {script} {out} {setup['spec']} "
             f"'{setup['old']}' '{setup['new']}' {8 << 10}")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["first"] == 0
    assert result["full"] == 1, result["stderr"][-3000:]
    last = result["stderr"].strip().splitlines()[-1]
    assert last.startswith("prepro analyze: error: ") and "No space left on device" in last, result["stderr"]
    assert "Traceback" not in result["stderr"]
    during = {p: b for p, b in result["during"].items() if p != "filler"}
    assert [p for p in during if p.endswith("manifest.json")] == ["manifest.json"]
    assert {p: during[p] for p in result["before"]} == result["before"]  # the previous artifact intact
    assert result["rerun"] == 0, result["rerun_stderr"][-3000:]
    manifest = json.loads(result["after"]["manifest.json"])
    clean = published(setup["clean"])
    assert result["after"]["manifest.json"].encode("latin-1") == clean["manifest.json"]
    for relpath in manifest["files"]:
        assert result["after"][f"{manifest['state_dir']}/{relpath}"].encode("latin-1") == clean[relpath]
