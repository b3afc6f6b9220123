"""The job checks the spec against Keras (pipelines/keras_helper.py): a config Keras
refuses only when the layer is built or called stops the job within seconds and
publishes nothing; the check runs in a helper process while the job runs (the CLI) or
before it starts (TensorFlow already loaded)."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import prepro
from pipelines.analyze import run_analyze
from prepro.spec import SpecError, spec_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# prepro's own validation accepts it; Keras fails on the first call (found by the check).
REFUSED = {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "tf_idf", "sparse": True}}
GOOD = {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"}}


def inputs(tmp_path, files=3):
    for i in range(files):
        (tmp_path / f"t{i}.txt").write_text("".join(f"the cat {i} sat {j}\n" for j in range(50)))
    return str(tmp_path / "t*.txt")


def test_refused_spec_cancels_the_running_job_and_publishes_nothing(tmp_path):
    """The CLI (no TensorFlow loaded): the job is held at its first batch (SIGSTOP at a
    failpoint) until the helper's refusal is in the work directory, then resumed: it
    stops at once, before finishing a read task, and the previous artifact stays."""
    out = tmp_path / "out"
    data = inputs(tmp_path)
    run_analyze(spec_from_dict({"features": {"review": GOOD}}), [data], "text", str(out), golden_rows=0)
    before = (out / "manifest.json").read_bytes()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"review": REFUSED}}))
    job = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", str(spec), "--input", data,
                            "--format", "text", "--output", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": ROOT, "PREPRO_FAILPOINTS": "read:stop",
                                "PREPRO_KERAS_CHECK_CACHE": "0"})  # the helper's refusal, not a cached one
    started = time.time()
    try:
        while not glob.glob(str(out / ".prepro-work-*" / "cancelled.json")):
            assert job.poll() is None, job.stderr.read()
            assert time.time() - started < 120, "the helper never refused the spec"
            time.sleep(0.05)
    finally:
        os.kill(job.pid, signal.SIGCONT)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("prepro analyze: error: feature 'review': Keras refuses this TextVectorization"), stderr
    assert "index innermost dimension" in last  # Keras's (TensorFlow's) own reason
    assert " 100% " not in stderr, "the inputs were all read: the job was not cancelled"
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(os.listdir(out)) == ["manifest.json", json.loads(before)["state_dir"]]


def test_refused_spec_fails_before_the_job_when_tensorflow_is_loaded(tmp_path):
    import tensorflow  # noqa: F401  (as in a notebook: the check runs in this process, first)
    out = tmp_path / "out"
    with pytest.raises(SpecError, match=r"feature 'review': Keras refuses"):
        run_analyze(spec_from_dict({"features": {"review": REFUSED}}), [inputs(tmp_path)], "text", str(out))
    assert not out.exists()


def test_accepted_spec_runs_with_golden_rows_from_the_helper(tmp_path):
    out = tmp_path / "out"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"review": GOOD}}))
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", str(spec), "--input",
                           inputs(tmp_path), "--format", "text", "--output", str(out), "--golden-rows", "3"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert prepro.load(str(out)).manifest["golden"]["rows"] == 3


def test_covered_golden_rows_are_recorded_without_tensorflow_once_the_helper_checked(tmp_path):
    """A cold verdict cache starts the helper (it imports TensorFlow to check the spec);
    golden rows of a spec prepro.golden_numpy covers are then recorded in the job's own
    process, which never imports TensorFlow, after the helper is let go (the helper no
    longer loads a big vocabulary next to TensorFlow), and the next job finds the
    verdict cached."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    script = (
        "import sys, json\n"
        "from pipelines import keras_helper\n"
        "from pipelines.analyze import run_analyze\n"
        "from prepro.spec import spec_from_dict\n"
        "recorded = []\n"
        "record = keras_helper.golden.record\n"
        "def spy(*args):\n"
        "    recorded.append(1)\n"
        "    return record(*args)\n"
        "keras_helper.golden.record = spy\n"
        "started = []\n"
        "popen = keras_helper.subprocess.Popen\n"
        "keras_helper.subprocess.Popen = lambda *a, **k: started.append(1) or popen(*a, **k)\n"
        f"spec = spec_from_dict({{'features': {{'user': {{'source': 'text', 'layer': 'StringLookup'}}}}}})\n"
        f"run_analyze(spec, [{inputs(tmp_path)!r}], 'text', {str(out)!r}, golden_rows=3)\n"
        "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'helpers': len(started),\n"
        "                  'recorded_here': len(recorded)}))\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "PREPRO_CACHE_DIR": str(cache)}
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures == {"tf": False, "helpers": 1, "recorded_here": 1}
    assert prepro.load(str(out)).manifest["golden"]["rows"] == 3
    assert glob.glob(str(cache / "keras-check" / "*"))  # the helper cached its verdict


def _helper_state(job_pid: int):
    """The state letter of `job_pid`'s Keras helper child (Z once it exited), or None."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"pipelines.keras_helper" in cmdline and int(stat[1]) == job_pid:
            return stat[0]
    return None


def test_the_helper_exits_after_its_verdict_when_numpy_records_the_golden_rows(tmp_path):
    """A cold verdict cache starts the helper; for a spec prepro.golden_numpy covers it
    has nothing to do after the verdict, so it exits then (its TensorFlow is not held
    through the job: ~0.8 GB of a bigram job's peak). The job is held at its first read
    until the helper has exited, then finishes with its golden rows."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"user": {"source": "text", "layer": "StringLookup"}}}))
    env = {**os.environ, "PYTHONPATH": ROOT, "PREPRO_CACHE_DIR": str(cache), "PREPRO_FAILPOINTS": "read:stop"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    job = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", str(spec), "--input",
                            inputs(tmp_path), "--format", "text", "--output", str(out), "--golden-rows", "3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    started, seen = time.time(), set()
    try:
        while True:
            state = _helper_state(job.pid)
            seen.add(state)
            if "Z" in seen or (seen - {None} and state is None):  # exited (a zombie: the job is stopped)
                break
            assert job.poll() is None, job.stderr.read()
            assert time.time() - started < 120, f"the helper did not exit after its verdict: {seen}"
            time.sleep(0.05)
        assert glob.glob(str(cache / "keras-check" / "*"))  # its verdict, cached
        assert not (out / "manifest.json").exists()  # while the job has not got past its first read
    finally:
        while job.poll() is None and time.time() - started < 240:  # (it stops again at every read)
            os.kill(job.pid, signal.SIGCONT)
            time.sleep(0.05)
    _, stderr = job.communicate(timeout=10)
    assert job.returncode == 0, stderr
    assert prepro.load(str(out)).manifest["golden"]["rows"] == 3
