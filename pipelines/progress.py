"""A job's progress: input bytes read of the planned total, from the workers to the driver.

Workers (`Reporter`, inside ExtractStatistics) report the bytes of each batch as it is
summarized and the rest of a read task when it ends, so a task's reports add up to its
bytes exactly and one big file still moves the figure. The driver (`Tracker`) polls
them from a thread and hands `Update`s to a display (`display_for`: a rich bar on a
terminal, plain lines elsewhere) or to the caller's own callback.

The channel is a file in a private temporary directory the driver creates: each worker
appends fixed-size records to it (O_APPEND, one write(2) per record, so concurrent
writers never interleave inside a record and the driver reads only whole ones). Why a
file: it works unchanged for every runner whose workers share this machine's file
system, in-process DoFns, FnApiRunner's worker processes, the portable path's SDK worker
processes and a dask LocalCluster's workers alike, without a port, a service or a
dependency, and Beam metrics reach the driver only at the end of a local job (DaskRunner
has none at all). A worker elsewhere (Dataflow, a dask worker on another host) finds
no such file and stays silent: for a runner whose `p.run()` returns while the job runs,
the driver polls the job's `input_bytes_read` counter instead (Dataflow's is live);
remote dask workers give only the final summary.
"""

import dataclasses
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Callable, Optional

# (read task's index, its bytes read so far, 1 if it is finished): the driver keeps each
# task's largest figure, so a task read twice counts once (a retried bundle; Beam 2.77's
# DaskRunner reads every task once per consumer of the extract step: 3 times here).
RECORD = struct.Struct("<qqq")
CHANNEL_FILE = "progress.bin"
POLL_SECONDS = 0.25       # the driver reads the channel this often
METRICS_SECONDS = 3.0     # and asks a remote runner for its counter this often
PLAIN_SECONDS = 5.0       # plain lines at most this often (plus at 100% and per stage)
RATE_WINDOW_SECONDS = 30.0

READING = "reading"
AFTER_READING = "ranking vocabularies, summarizing numeric features, writing state files"
AFTER_READING_UPDATE = "merging the base's kept state, ranking vocabularies, writing state files"
GOLDEN = "recording golden rows"  # (with NumPy where prepro.golden_numpy covers the spec, else Keras)
PUBLISHING = "publishing"


class Reporter:
    """A worker's end of the channel: picklable (only the path travels with the DoFn);
    the file is opened on first use, never created (the driver creates it), so a worker
    on another machine, or after the driver cleaned up, reports nothing. Progress never
    fails a job: an error writing turns the reporter off."""

    def __init__(self, path: Optional[str]):
        self._path, self._fd = path, None

    def __getstate__(self):
        return {"_path": self._path, "_fd": None}

    def report(self, task_index: int, bytes_read: int, finished: bool = False) -> None:
        """Read task `task_index` has read `bytes_read` of its bytes (and is done)."""
        if self._path is None:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
            os.write(self._fd, RECORD.pack(task_index, bytes_read, int(finished)))
        except OSError:
            self.close()
            self._path = None

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


@dataclasses.dataclass(frozen=True)
class Update:
    """What the driver knows at one moment. `done_bytes` never exceeds `total_bytes`."""
    done_bytes: int
    total_bytes: int
    files: int
    tasks_done: int
    elapsed: float                  # seconds since the tracker started
    stage: str                      # READING, then what runs after the reading
    bytes_per_second: Optional[float]
    base: Optional[str] = None      # the artifacts an update merges (not re-read)
    finished: bool = False          # the tracker's last update (the job ended, either way)

    @property
    def share(self) -> float:
        return 1.0 if self.total_bytes <= 0 else self.done_bytes / self.total_bytes

    @property
    def seconds_left(self) -> Optional[float]:
        if self.done_bytes >= self.total_bytes:
            return 0.0
        if not self.bytes_per_second:
            return None
        return (self.total_bytes - self.done_bytes) / self.bytes_per_second


class Tracker:
    """The driver's end: `with Tracker(...) as t:` creates the channel (`t.channel`, the
    path to give the workers), polls it from a thread and calls `show(update)` on every
    poll; `t.watch(result)` adds a running job's Beam counter, `t.stage(text)` says what
    runs after the reading. Leaving the block stops the thread and shows a last update."""

    def __init__(self, total_bytes: int, files: int, show: Callable[[Update], None], base: Optional[str] = None):
        self._total, self._files, self._show, self._base = total_bytes, files, show, base
        self._task_bytes, self._tasks_done, self._metric_bytes = {}, set(), 0
        self._stage, self._result, self._offset = READING, None, 0
        self._samples = deque()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # show() is called from the thread and from the driver
        self._watch_lock = threading.Lock()  # no query of a result the driver is done with

    def __enter__(self):
        self._dir = tempfile.mkdtemp(prefix="prepro-progress-")
        self.channel = os.path.join(self._dir, CHANNEL_FILE)
        with open(self.channel, "wb"):
            pass
        self._file = open(self.channel, "rb")
        self._started = time.monotonic()
        self._tick()
        self._thread = threading.Thread(target=self._poll, name="prepro-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._tick(finished=True)
        self._file.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return False

    def watch(self, result) -> None:
        """Also poll `result`'s input_bytes_read counter (a runner that returns from
        p.run() while the job runs: its workers may be on other machines); None stops."""
        with self._watch_lock:
            self._result = result

    def stage(self, text: str) -> None:
        self._stage = text
        self._tick()

    def _poll(self) -> None:
        asked = 0.0
        while not self._stop.wait(POLL_SECONDS):
            with self._watch_lock:
                if self._result is not None and time.monotonic() - asked >= METRICS_SECONDS:
                    asked = time.monotonic()
                    self._metric_bytes = max(self._metric_bytes, bytes_counter(self._result) or 0)
            self._tick()

    def _tick(self, finished: bool = False) -> None:
        with self._lock:
            self._read_records()
            done = min(self._total, max(sum(self._task_bytes.values()), self._metric_bytes))
            if self._stage == READING and done >= self._total and self._total_known():
                self._stage = AFTER_READING_UPDATE if self._base else AFTER_READING
            now = time.monotonic()
            self._show(Update(done, self._total, self._files, len(self._tasks_done), now - self._started, self._stage,
                              self._rate(now, done), self._base, finished))

    def _total_known(self) -> bool:
        # An empty input is read before anything starts: wait for its task to end.
        return self._total > 0 or bool(self._tasks_done)

    def _read_records(self) -> None:
        data = self._file.read()
        whole = len(data) - len(data) % RECORD.size
        for task, nbytes, finished in RECORD.iter_unpack(data[:whole]):
            self._task_bytes[task] = max(nbytes, self._task_bytes.get(task, 0))
            if finished:
                self._tasks_done.add(task)
        self._file.seek(self._offset + whole)  # a record half written: read it next time
        self._offset += whole

    def _rate(self, now: float, done: int) -> Optional[float]:
        """Bytes per second over the last RATE_WINDOW_SECONDS since the first byte
        (Beam's start-up is not reading time)."""
        if done == 0:
            return None
        samples = self._samples
        if not samples or samples[-1][1] != done:
            samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] > RATE_WINDOW_SECONDS:
            samples.popleft()
        (t0, d0), (t1, d1) = samples[0], samples[-1]
        if len(samples) == 1 or t1 - t0 < 0.5:
            return None
        return (d1 - d0) / (t1 - t0)


def bytes_counter(result) -> Optional[int]:
    """The job's input_bytes_read counter as the runner has it now (None: no metrics).
    Beam 2.77's portable result caches its first metrics response for good, so the
    cache is dropped around the query: a later `result.metrics()` is fresh too."""
    from apache_beam.metrics import MetricsFilter
    from pipelines.transforms import METRICS
    try:
        _drop_cached_metrics(result)
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS).with_name("input_bytes_read"))
        _drop_cached_metrics(result)
    except Exception:  # noqa: BLE001 (no metrics on this runner, or the service is busy: try later)
        return None
    values = [c.committed if c.committed is not None else c.attempted for c in found["counters"]]
    return sum(int(v or 0) for v in values)


def _drop_cached_metrics(result) -> None:
    if hasattr(result, "_metrics") and hasattr(result, "_job_service"):
        result._metrics = None


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def first_line(update: Update) -> str:
    files = f"{update.files} file{'s' if update.files != 1 else ''}"
    base = f", updating {update.base} (its kept state is merged, not re-read)" if update.base else ""
    return f"prepro: reading {megabytes(update.total_bytes)} in {files}{base}"


def plain_line(update: Update) -> str:
    """`prepro: 09:11:03 41% 108.0/263.4 MB, 12.3 MB/s, about 13 s left`"""
    clock = time.strftime("%H:%M:%S")
    rate = update.bytes_per_second
    speed = f", {rate / 1e6:.1f} MB/s" if rate else ""
    left = update.seconds_left
    remaining = "" if update.share >= 1 else ", estimating time left" if left is None else \
        ", under 1 s left" if left < 1 else f", about {_duration(left)} left"
    return (f"prepro: {clock} {int(update.share * 100)}% {update.done_bytes / 1e6:.1f}/"
            f"{megabytes(update.total_bytes)}{speed}{remaining}")


def stage_line(update: Update) -> str:
    return f"prepro: {time.strftime('%H:%M:%S')} {update.stage}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class PlainLines:
    """Lines without terminal codes, for pipes, CI logs and remote runners: the first
    at once, then a share at most every `interval` seconds while the bytes move, one at
    100%, and one per stage after the reading."""

    def __init__(self, stream=None, interval: float = PLAIN_SECONDS):
        self._stream, self._interval = stream, interval
        self._last_line = self._last_done = None
        self._stage = None

    def __call__(self, update: Update) -> None:
        if self._last_line is None:
            self._write(first_line(update))
            self._last_line, self._last_done, self._stage = update.elapsed, 0, READING
        moved = update.done_bytes != self._last_done
        complete = update.share >= 1 and self._last_done != update.done_bytes
        if moved and (complete or update.elapsed - self._last_line >= self._interval):
            self._write(plain_line(update))
            self._last_line, self._last_done = update.elapsed, update.done_bytes
        if update.stage != self._stage and not update.finished:
            self._write(stage_line(update))
            self._stage = update.stage

    def close(self) -> None:
        pass

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


class RichBar:
    """A terminal's progress bar (rich): share, bytes, rate, time left and elapsed,
    redrawn twice a second by rich's own thread, so the clock moves while no bytes
    arrive. The first line is printed at once, above the bar, as is what runs after
    the reading."""

    def __init__(self, console):
        from rich import progress as rp
        self._console = console
        self._bar = rp.Progress(
            rp.TextColumn("[bold]prepro[/] {task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
            rp.DownloadColumn(), rp.TransferSpeedColumn(), rp.TextColumn("left"), rp.TimeRemainingColumn(),
            # The job's time, not the task's: rich's elapsed column stops at 100%.
            rp.TextColumn("elapsed [yellow]{task.fields[elapsed]}"),
            console=console, refresh_per_second=2, redirect_stdout=False, redirect_stderr=True)
        self._task = None

    def __call__(self, update: Update) -> None:
        if self._task is None:
            self._console.print(first_line(update), highlight=False, markup=False)
            self._task = self._bar.add_task(READING, total=max(update.total_bytes, 1), elapsed=_clock(0))
            self._bar.start()
            self._stage = READING
        completed = update.done_bytes if update.total_bytes else 1
        self._bar.update(self._task, completed=completed, description=READING if update.share < 1 else "read",
                         elapsed=_clock(update.elapsed))
        if update.stage != self._stage and not update.finished:
            self._bar.refresh()
            self._console.print(stage_line(update), highlight=False, markup=False)  # above the bar
            self._stage = update.stage

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()


def display_for(stream=None, interval: float = PLAIN_SECONDS, remote: bool = False, plain: bool = False):
    """The display for `stream` (default sys.stderr): a rich bar on a terminal, plain
    lines when it is not one, on a remote runner (its counters move in steps), or when
    asked (`plain`: Beam's log is interleaved)."""
    stream = stream or sys.stderr
    if not (remote or plain) and _is_terminal(stream):
        from rich.console import Console
        console = Console(file=stream)
        if console.is_terminal and not console.is_dumb_terminal:
            return RichBar(console)
    return PlainLines(stream, interval)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
