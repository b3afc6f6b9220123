"""Publishing under concurrency and hostile surroundings: one job at a time per output
(a lock that also works on object stores), foreign files never touched, a foreign
manifest never overwritten, leftovers of killed jobs removed, the previous artifact kept
until the next job, temporary files created safely. (Kills and a full disk:
tests/test_faults.py.)"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import object_store
import prepro
from artifact_fixtures import to_version_1
from conftest import state_path
from pipelines import publish
from pipelines.analyze import run_analyze
from prepro import fs
from prepro.spec import spec_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {"features": {"carrier": {"source": "carrier", "layer": "StringLookup"},
                     "fare": {"source": "fare", "layer": "Normalization"}}}


def write_csv(path, carriers):
    path.write_text("carrier,fare\n" + "".join(f"{c},{i * 1.5}\n" for i, c in enumerate(carriers)))
    return str(path)


def analyze(data, out):
    return run_analyze(spec_from_dict(SPEC), [data], "csv", str(out), golden_rows=0)


def cli(data, out, env=None):
    spec = os.path.join(os.path.dirname(str(out)), "spec.json")
    with open(spec, "w") as f:
        json.dump(SPEC, f)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", spec, "--input", data,
                             "--format", "csv", "--output", str(out), "--golden-rows", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def wait_until(condition, timeout=60.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_a_second_job_into_a_locked_output_fails_at_once_naming_the_first(tmp_path):
    data = write_csv(tmp_path / "a.csv", ["AA", "UA", "UA"])
    out = tmp_path / "out"
    # The first job stops itself while reading (SIGSTOP at a failpoint): it holds the lock.
    first = cli(data, out, env={"PREPRO_FAILPOINTS": "read:stop"})
    try:
        wait_until(lambda: os.waitid(os.P_PID, first.pid, os.WSTOPPED | os.WNOHANG | os.WNOWAIT) is not None)
        with pytest.raises(publish.OutputBusy, match=rf"another prepro job \(pid {first.pid} on "):
            analyze(data, out)
        assert not (out / "manifest.json").exists()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert prepro.load(str(out)).vocabulary("carrier") == ["UA", "AA"]
    assert sorted(os.listdir(out)) == ["manifest.json", json.loads((out / "manifest.json").read_text())["state_dir"]]


def test_jobs_started_together_serialize_or_fail_cleanly(tmp_path):
    data = write_csv(tmp_path / "a.csv", ["AA", "UA", "UA", "DL"])
    out = tmp_path / "out"
    jobs = [cli(data, out) for _ in range(4)]
    results = [(job.wait(timeout=180), job.stderr.read()) for job in jobs]
    assert any(code == 0 for code, _ in results)
    for code, stderr in results:
        assert code == 0 or "is being written by another prepro job" in stderr.strip().splitlines()[-1], stderr
    clean = tmp_path / "clean"
    analyze(data, clean)
    assert (out / "manifest.json").read_bytes() == (clean / "manifest.json").read_bytes()
    assert prepro.load(str(out)).vocabulary("carrier") == ["UA", "DL", "AA"]


def test_a_killed_jobs_lock_does_not_block_the_next_job(tmp_path):
    data = write_csv(tmp_path / "a.csv", ["AA", "UA"])
    out = tmp_path / "out"
    killed = cli(data, out, env={"PREPRO_FAILPOINTS": "read"})
    assert killed.wait(timeout=120) == -signal.SIGKILL
    assert (out / publish.LOCK).exists()  # left behind, but no process holds its flock
    analyze(data, out)
    assert not (out / publish.LOCK).exists()


@pytest.mark.parametrize("content", [b'{"hello": "world"}', b"not json", b"\xff\xfe", b"[1, 2]"])
def test_a_foreign_manifest_is_never_overwritten(tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_bytes(content)
    with pytest.raises(publish.OutputError, match="prepro (never|does not) overwrites? "):
        analyze(write_csv(tmp_path / "a.csv", ["AA"]), out)
    assert (out / "manifest.json").read_bytes() == content
    assert sorted(os.listdir(out)) == ["manifest.json"]


def test_special_files_in_the_output_never_block_the_job(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "manifest.json")
    result = {}
    thread = threading.Thread(target=lambda: result.update(error=_error(analyze, write_csv(tmp_path / "a.csv", ["A"]), out)))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the job blocked on a FIFO named manifest.json"
    assert isinstance(result["error"], publish.OutputError) and "not a regular file" in str(result["error"])


def test_an_output_that_is_a_file_or_whose_lock_is_a_symlink(tmp_path):
    data = write_csv(tmp_path / "a.csv", ["AA"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(publish.OutputError, match="exists and is not a directory"):
        analyze(data, tmp_path / "file")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, out / publish.LOCK)  # a planted symlink is never followed
    with pytest.raises(publish.OutputError, match="lock file"):
        analyze(data, out)
    assert victim.read_text() == "keep"


def _error(function, *args):
    try:
        function(*args)
    except Exception as e:  # noqa: BLE001
        return e
    return None


def test_leftovers_are_removed_and_foreign_files_kept(tmp_path):
    data = write_csv(tmp_path / "a.csv", ["AA", "UA"])
    out = tmp_path / "out"
    analyze(data, out)
    current = json.loads((out / "manifest.json").read_text())["state_dir"]
    leftovers = [".prepro-work-" + "a" * 32, "state-" + "b" * 16, fs.TEMP_PREFIX + "c" * 16]
    foreign = ["notes.txt", "state-mine", ".prepro-work-mine", "state-" + "d" * 15, ".prepro-tmp-x"]
    for name in leftovers[:2] + foreign[1:3]:
        (out / name).mkdir()
        (out / name / "file").write_text("x")
    for name in leftovers[2:] + foreign[:1] + foreign[3:]:
        (out / name).write_text("x")
    analyze(write_csv(tmp_path / "b.csv", ["DL"]), out)
    new = json.loads((out / "manifest.json").read_text())["state_dir"]
    assert sorted(os.listdir(out)) == sorted(["manifest.json", new, current] + foreign)


def test_the_previous_artifact_stays_until_the_next_job_starts(tmp_path):
    out = tmp_path / "out"
    states = []
    for i, carriers in enumerate([["AA"], ["UA"], ["DL"]]):
        analyze(write_csv(tmp_path / f"{i}.csv", carriers), out)
        states.append(json.loads((out / "manifest.json").read_text())["state_dir"])
        assert sorted(os.listdir(out)) == sorted({"manifest.json", *states[-2:]})
    assert len(set(states)) == 3
    # The same input again: the same state directory (content-addressed), nothing rewritten.
    before = os.stat(state_path(out, "carrier/vocabulary.txt")).st_mtime_ns
    analyze(str(tmp_path / "2.csv"), out)
    assert json.loads((out / "manifest.json").read_text())["state_dir"] == states[-1]
    assert os.stat(state_path(out, "carrier/vocabulary.txt")).st_mtime_ns == before


def test_a_version_1_artifact_is_read_and_replaced_cleanly(tmp_path):
    """Version 1 kept files directly under the root; a new job replaces them (by the list
    in their own manifest) and leaves what is not theirs."""
    data = write_csv(tmp_path / "a.csv", ["AA", "UA", "UA"])
    out = tmp_path / "out"
    analyze(data, out)
    to_version_1(str(out))
    (out / "carrier" / "notes.txt").write_text("mine")
    assert prepro.load(str(out)).vocabulary("carrier") == ["UA", "AA"]
    analyze(write_csv(tmp_path / "b.csv", ["DL"]), out)
    new = json.loads((out / "manifest.json").read_text())["state_dir"]
    assert sorted(os.listdir(out)) == sorted(["manifest.json", new, "carrier"])
    assert os.listdir(out / "carrier") == ["notes.txt"]
    assert prepro.load(str(out)).vocabulary("carrier") == ["DL"]


def test_temporary_files_are_unpredictable_exclusive_and_keep_the_umask(tmp_path):
    fds = [fs.create_temp(str(tmp_path)) for _ in range(20)]
    names = {os.path.basename(path) for _, path in fds}
    assert len(names) == 20 and all(publish._TEMP_FILE.match(n) for n in names)
    for fd, _ in fds:
        os.close(fd)
    umask = os.umask(0o022)
    os.umask(umask)
    fs.write_bytes(str(tmp_path / "f"), b"data")
    assert os.stat(tmp_path / "f").st_mode & 0o777 == 0o666 & ~umask
    # A symlink planted at the destination is replaced, never written through.
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "dest")
    fs.write_bytes(str(tmp_path / "dest"), b"new")
    assert victim.read_text() == "keep" and (tmp_path / "dest").read_bytes() == b"new"
    assert not (tmp_path / "dest").is_symlink()
    assert sorted(os.listdir(tmp_path)) == sorted(names | {"f", "victim", "dest"})  # no temp file left


def test_object_store_lock_refuses_a_fresh_lock_and_takes_over_a_stale_one(tmp_path):
    """objtest:// (tests/object_store.py) has no conditional writes: the best-effort lock."""
    data = write_csv(tmp_path / "a.csv", ["AA", "UA"])
    out = object_store.PREFIX + str(tmp_path / "remote")
    lock = tmp_path / "remote" / publish.LOCK
    lock.parent.mkdir()
    holder = {"id": "x", "host": "elsewhere", "pid": 4242, "started": "earlier"}
    lock.write_text(json.dumps({**holder, "heartbeat": time.time()}))
    with pytest.raises(publish.OutputBusy, match="pid 4242 on elsewhere"):
        analyze(data, out)
    lock.write_text(json.dumps({**holder, "heartbeat": time.time() - 2 * publish._HeartbeatLock.STALE_SECONDS}))
    analyze(data, out)
    assert not lock.exists()
    assert prepro.load(out).vocabulary("carrier") == ["UA", "AA"]


# --- gs:// through a real Cloud Storage API server on loopback ----------------------------

def test_gcs_lock_is_exclusive_heartbeats_and_is_released(gcs_emulator, monkeypatch):
    from google.api_core.exceptions import NotFound
    output = f"{gcs_emulator}/lock-test"
    first, second = publish._GcsLock(output), publish._GcsLock(output)
    monkeypatch.setattr(publish._HeartbeatLock, "HEARTBEAT_SECONDS", 0.2)
    first.acquire({"id": "1", "host": "h1", "pid": 1, "started": "s1"})
    with pytest.raises(publish.OutputBusy, match="pid 1 on h1"):
        second.acquire({"id": "2", "host": "h2", "pid": 2, "started": "s2"})
    generation = first._generation
    wait_until(lambda: first._generation != generation, timeout=10)  # the heartbeat rewrote it
    first.check()
    first.release()
    with pytest.raises(NotFound):
        first._blob.reload()
    second.acquire({"id": "2", "host": "h2", "pid": 2, "started": "s2"})
    second.release()


def test_gcs_lock_of_a_killed_job_is_taken_over_and_a_lost_lock_is_reported(gcs_emulator, monkeypatch):
    output = f"{gcs_emulator}/stale-test"
    killed = publish._GcsLock(output)
    killed.acquire({"id": "1", "host": "h1", "pid": 1, "started": "s1"})
    killed._stop.set()  # its process died: no more heartbeats
    killed._thread.join()
    monkeypatch.setattr(publish._HeartbeatLock, "STALE_SECONDS", 0.5)
    monkeypatch.setattr(publish._HeartbeatLock, "HEARTBEAT_SECONDS", 0.2)
    time.sleep(1.0)
    taker = publish._GcsLock(output)
    taker.acquire({"id": "2", "host": "h2", "pid": 2, "started": "s2"})
    # The first job, still alive after all, finds at publish time that it lost the lock.
    killed._stop.clear()
    killed._thread = threading.Thread(target=killed._beat, daemon=True)
    killed._thread.start()
    wait_until(lambda: killed._lost is not None, timeout=10)
    with pytest.raises(publish.OutputError, match="lost the lock"):
        killed.check()
    killed._stop.set()
    taker.release()


def test_an_artifact_without_state_files_publishes(tmp_path):
    """Features with nothing to learn write no state file: the state directory is empty."""
    data = tmp_path / "a.csv"
    data.write_text("user\nu1\nu2\n")
    out = tmp_path / "out"
    run_analyze(spec_from_dict({"features": {"user": {"source": "user", "layer": "Hashing",
                                                      "config": {"num_bins": 8}}}}),
                [str(data)], "csv", str(out), golden_rows=0)
    manifest = prepro.load(str(out)).manifest
    assert manifest["files"] == {} and os.listdir(out / manifest["state_dir"]) == []
