"""What a person sees while a job runs (pipelines/progress.py): input bytes read of the
planned total, rising to exactly the inputs' bytes, from every local runner; a rich bar
on a terminal, plain lines in a pipe, nothing from the Python API unless asked; dask's
INFO log kept out of the terminal unless --verbose; an error still one line at the end.

The CLI runs as a real process. PREPRO_FAILPOINTS=read:sleep slows each batch by 0.1 s
and --batch-bytes cuts the 1.3 MB example into ~27 batches, so the figures move for a
few seconds without a big input."""

import os
import pty
import re
import select
import subprocess
import sys

import pytest

from pipelines import failpoints, progress
from pipelines.analyze import run_analyze
from prepro.spec import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "examples", "spec.yaml")
DATA = os.path.join(ROOT, "examples", "data", "*.csv")
SIZE = sum(os.path.getsize(os.path.join(ROOT, "examples", "data", f"flights-{k}.csv")) for k in range(3))
SLOW = {"PREPRO_FAILPOINTS": "read:sleep"}
PLAIN = re.compile(r"^prepro: \d\d:\d\d:\d\d (\d+)% ([\d.]+)/([\d.]+) MB")
ANSI = "\x1b["


def cli(tmp_path, *extra, env=None, inputs=DATA, fmt="csv"):
    argv = [sys.executable, "-m", "pipelines.cli", "analyze", "--spec", SPEC, "--input", inputs, "--format", fmt,
            "--output", str(tmp_path / "out"), "--golden-rows", "0", "--batch-bytes", "50000",
            "--progress-interval", "0.2", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def shares(stderr: str):
    """The plain lines' (share, done MB, total MB), in order."""
    return [(int(m[1]), float(m[2]), float(m[3])) for m in map(PLAIN.match, stderr.splitlines()) if m]


def assert_rising_to_the_inputs_bytes(stderr: str, updates: int = 3):
    seen = shares(stderr)
    assert len({share for share, _, _ in seen}) >= updates, stderr
    assert [s for s, _, _ in seen] == sorted(s for s, _, _ in seen), stderr
    assert seen[-1] == (100, round(SIZE / 1e6, 1), round(SIZE / 1e6, 1)), stderr


def test_plain_lines_in_a_pipe_rise_to_100_percent_of_the_inputs_bytes(tmp_path):
    done = cli(tmp_path, env=SLOW)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"prepro: reading {SIZE / 1e6:.1f} MB in 3 files", done.stderr
    assert_rising_to_the_inputs_bytes(done.stderr)
    assert ANSI not in done.stderr and "\r" not in done.stderr
    assert re.search(r"MB/s, (about \d+ s|under 1 s) left", done.stderr), done.stderr
    # After 100%, what runs now; every line is prepro's own.
    # (A stage can end within one poll of the tracker on a loaded machine: then nothing
    # names it, and that is right; whatever is named comes in the job's order.)
    after = lines[[i for i, line in enumerate(lines) if " 100% " in line][0] + 1:]
    stages = [line.split(" ", 2)[2] for line in after]
    order = [progress.AFTER_READING, progress.GOLDEN, progress.PUBLISHING]
    assert all(stage in order for stage in stages), done.stderr
    assert [order.index(stage) for stage in stages] == sorted(order.index(stage) for stage in stages), done.stderr
    assert all(line.startswith("prepro: ") for line in lines), done.stderr
    assert done.stdout.startswith("prepro analyze: 12000 rows, 1.3 MB from 3 file(s)"), done.stdout


def test_the_python_api_reports_per_batch_exact_bytes_on_one_and_two_worker_processes(tmp_path, monkeypatch):
    """A callback's updates: shares that rise batch by batch (one read task per file:
    the per-task counts alone would give 3 steps), ending at exactly the inputs' bytes,
    in-process and from FnApiRunner's worker processes."""
    monkeypatch.setenv("PREPRO_FAILPOINTS", "read:sleep")  # the worker processes read it
    monkeypatch.setattr(failpoints, "_ARMED", {"read": "sleep"})
    spec = load_spec(SPEC)
    for name, args in {"in_process": [], "two_workers": ["--direct_num_workers=2"]}.items():
        updates, counters = [], {}
        run_analyze(spec, [DATA], "csv", str(tmp_path / name), args, golden_rows=0, batch_bytes=50000,
                    counters=counters, progress=updates.append)
        done = [u.done_bytes for u in updates]
        assert done == sorted(done) and len(set(done)) > 6, (name, done)
        assert updates[-1].finished and updates[-1].done_bytes == updates[-1].total_bytes == SIZE, name
        assert updates[-1].tasks_done == 3 and updates[-1].files == 3
        assert any(u.bytes_per_second for u in updates), name
        assert updates[-1].stage == progress.AFTER_READING
        # The Beam counter, per batch too, adds up to the same bytes.
        assert counters["input_bytes_read"] == SIZE and counters["batches"] > 6, (name, counters)


def test_dask_workers_report_on_the_channel_without_beam_metrics(tmp_path, dask_cluster):
    # In its own process: Beam's DaskRunner leaves its Client open, which breaks a later
    # DaskRunner job in the same process (test_runners' own cluster) in a worker's side input.
    done = cli(tmp_path, "--runner", "DaskRunner", "--dask_client_address", dask_cluster.scheduler_address)
    assert done.returncode == 0, done.stderr
    # Beam 2.77's DaskRunner has no metrics (the summary names no read tasks): the channel
    # is all there is, and each file counts once though DaskRunner reads every task once
    # per consumer. (The cluster's workers read at full speed: maybe one line, at 100%.)
    assert_rising_to_the_inputs_bytes(done.stderr, updates=1)
    assert " read tasks" not in done.stdout and "1.3 MB from 3 file(s)" in done.stdout, done.stdout


def test_dask_local_cluster_shows_progress_and_keeps_distributed_info_out_unless_verbose(tmp_path):
    """DaskRunner without --dask_client_address starts a LocalCluster in the CLI's own
    process (scheduler and nannies, which log at INFO to stderr) and worker processes."""
    quiet = cli(tmp_path, "--runner", "DaskRunner", env=SLOW)
    assert quiet.returncode == 0, quiet.stderr
    assert_rising_to_the_inputs_bytes(quiet.stderr)
    assert "distributed." not in quiet.stderr, quiet.stderr
    verbose = cli(tmp_path, "--runner", "DaskRunner", "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert re.search(r"INFO.*distributed\.scheduler", verbose.stderr), verbose.stderr[-3000:]


def run_in_pty(argv, env):
    """Runs `argv` with stderr on a pseudo-terminal: (exit status, what it wrote there)."""
    master, slave = pty.openpty()
    job = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, close_fds=True,
                           env={**os.environ, "PYTHONPATH": ROOT, "TERM": "xterm-256color", **env})
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the job closed its end
                break
            if not data:
                break
            out += data
        elif job.poll() is not None:
            break
    job.wait(timeout=300)
    os.close(master)
    return job.returncode, out.decode("utf-8", "replace")


def pty_argv(tmp_path, *extra):
    return [sys.executable, "-m", "pipelines.cli", "analyze", "--spec", SPEC, "--format", "csv",
            "--output", str(tmp_path / "out"), "--golden-rows", "0", "--batch-bytes", "50000", *extra]


def test_a_terminal_shows_a_rich_bar_that_refreshes_share_and_time_left(tmp_path):
    # The ranking made to last (16 shards, 0.1 s each) well past a poll of the channel, so
    # what runs after the reading is on screen: a stage shorter than a poll may go unnamed.
    status, screen = run_in_pty(pty_argv(tmp_path, "--input", DATA, "--shards", "16"),
                                {"PREPRO_FAILPOINTS": "read:sleep,rank:sleep"})
    assert status == 0, screen
    assert screen.startswith(f"prepro: reading {SIZE / 1e6:.1f} MB in 3 files\r\n"), screen[:300]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # the bar's text, without its colours
    frames = plain.split("\r")
    percents = [int(m[1]) for m in (re.search(r"(\d+)%", f) for f in frames if "left" in f) if m]
    assert len(set(percents)) >= 3 and percents[-1] == 100, percents
    assert re.search(r"kB/s left 0:00:0\d", plain), plain  # rate and time left, once known
    assert "\x1b[2K" in screen  # the line is redrawn in place
    assert "ranking vocabularies" in plain


def test_a_failing_job_ends_with_its_one_error_line(tmp_path):
    bad = tmp_path / "bad.csv"
    with open(DATA.replace("*", "flights-0"), encoding="utf-8") as f:
        good = f.read()
    bad.write_text(good + "hello,UA,not-a-number,1.0,2.0,0,P1\n", encoding="utf-8")
    done = cli(tmp_path, inputs=str(bad))
    assert done.returncode == 1 and done.stdout == "", done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("prepro analyze: error: ") and "bad.csv" in lines[-1], done.stderr
    assert [line for line in lines if "error" in line] == [lines[-1]]
    assert all(line.startswith("prepro: ") for line in lines[:-1]) and "Traceback" not in done.stderr
    # On a terminal too: the bar is put away before the error, and nothing follows it.
    status, screen = run_in_pty(pty_argv(tmp_path, "--input", str(bad)), {})
    assert status == 1
    # (the bar's last state, rich's "show the cursor" code, the error line)
    assert re.search(r"\r\n(\x1b\[\?25h)?prepro analyze: error: [^\x1b\r\n]*bad\.csv[^\x1b\r\n]*\r\n$",
                     screen), screen[-800:]


def test_quiet_prints_only_the_summary(tmp_path):
    done = cli(tmp_path, "--quiet")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("prepro analyze: 12000 rows")


def test_the_python_api_prints_nothing_unless_asked(tmp_path, capfd):
    run_analyze(load_spec(SPEC), [DATA], "csv", str(tmp_path / "out"), golden_rows=0)
    assert "prepro" not in capfd.readouterr().err
    with pytest.raises(TypeError, match="progress must be"):
        run_analyze(load_spec(SPEC), [DATA], "csv", str(tmp_path / "out"), golden_rows=0, progress="yes")


def test_reporter_without_the_channel_stays_silent_and_tracker_reads_whole_records(tmp_path):
    progress.Reporter(str(tmp_path / "elsewhere" / "progress.bin")).report(10, 1)  # another host: no file
    updates = []
    with progress.Tracker(100, 1, updates.append) as tracker:
        reporter = progress.Reporter(tracker.channel)
        reporter.report(0, 30)
        reporter.report(0, 40)
        reporter.report(0, 40, finished=True)  # the same task read again (a retry) counts once
        with open(tracker.channel, "ab") as f:
            f.write(progress.RECORD.pack(1, 60, 1)[:5])  # a record half written: not read yet
    assert updates[-1].done_bytes == 40 and updates[-1].tasks_done == 1 and updates[-1].finished
    assert not os.path.exists(tracker.channel)  # the private directory is removed
    line = progress.plain_line(progress.Update(41, 100, 1, 0, 3.0, progress.READING, 10.0))
    assert re.fullmatch(r"prepro: \d\d:\d\d:\d\d 41% 0\.0/0\.0 MB, 0\.0 MB/s, about 6 s left", line), line


def test_the_remote_runners_counter_is_read_from_the_job_result():
    """What the driver polls on a runner whose workers are elsewhere (here a finished
    FnApiRunner job: the same query); no metrics (DaskRunner) is None, not an error."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    def count(n):
        Metrics.counter("prepro", "input_bytes_read").inc(n)
        return n

    p = beam.Pipeline()
    _ = p | beam.Create([5, 7]) | beam.Map(count)
    result = p.run()
    result.wait_until_finish()
    assert progress.bytes_counter(result) == 12
    assert progress.bytes_counter(object()) is None


def test_an_updates_first_line_names_its_base():
    update = progress.Update(0, 2_500_000, 2, 0, 0.0, progress.READING, None, base="arts/")
    assert progress.first_line(update) == ("prepro: reading 2.5 MB in 2 files, updating arts/ "
                                           "(its kept state is merged, not re-read)")
