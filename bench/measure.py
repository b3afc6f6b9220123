"""Runs one command and reports its wall time and peak memory as JSON.

    python -m bench.measure --json result.json -- prepro analyze ...

Run each measured thing in its own fresh wrapper: `getrusage(RUSAGE_CHILDREN)` is the
maximum over every child a process has ever waited for, so one long-lived parent
measuring several commands would report the largest of them for all.

Peak memory is reported two ways and `peak_mb` is the larger:
- `children_maxrss_mb`: getrusage(RUSAGE_CHILDREN).ru_maxrss, the exact peak RSS of
  the largest single process in the tree (every descendant that was waited for);
- `tree_rss_peak_mb`: the largest sum of RSS over the command's live process tree,
  sampled every `--interval` seconds (catches concurrent worker processes, which
  ru_maxrss never adds up; pages shared between processes are counted in each).
Linux carries ru_maxrss across fork and exec, so the command starts from this
wrapper's own high-water mark (`wrapper_maxrss_mb`, ~17 MB): keep the wrapper small.
`processes` lists the sampled peak RSS of each process of the tree with its role
(`role_of`): the figure behind a per-worker memory bound.
"""

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from typing import Dict, Optional

import psutil


def tree_rss(proc: psutil.Process, per_process: Optional[Dict] = None) -> int:
    """Bytes of RSS summed over `proc` and all its live descendants; when given,
    `per_process` (pid -> (role, peak bytes)) keeps each one's peak."""
    total = 0
    try:
        members = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            rss = member.memory_info().rss
            if per_process is not None:
                role, peak = per_process.get(member.pid) or (role_of(member.cmdline()), 0)
                per_process[member.pid] = (role, max(peak, rss))
        except psutil.NoSuchProcess:
            continue
        total += rss
    return total


def role_of(cmdline) -> str:
    """What a process of a prepro run is, from its command line."""
    text = " ".join(cmdline)
    if "sdk_worker_main" in text:
        return "beam-worker"      # FnApiRunner's worker process (multi_processing mode)
    if "prepro.golden" in text:
        return "golden-helper"    # records the golden rows' outputs with Keras
    if "dask" in text or "distributed" in text:
        return "dask"
    return "other"


def measure(cmd, interval: float = 0.1) -> dict:
    """Runs `cmd` to completion; wall time (start-up included) and memory peaks."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd)
    sampler = TreeSampler(child.pid, interval)
    sampler.start()
    child.wait()
    wall = time.perf_counter() - start
    sampler.stop()
    # ru_maxrss is in KiB on Linux; MB here are 10**6 bytes.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    tree = sampler.peak / 1e6
    processes = [{"pid": pid, "role": "driver" if pid == child.pid else role, "peak_mb": peak / 1e6}
                 for pid, (role, peak) in sorted(sampler.per_process.items())]
    return {"cmd": list(cmd), "returncode": child.returncode, "wall_s": wall,
            "children_maxrss_mb": children, "tree_rss_peak_mb": tree,
            "peak_mb": max(children, tree), "wrapper_maxrss_mb": own, "processes": processes}


class TreeSampler(threading.Thread):
    """Samples the process tree's summed RSS in the background, keeping the peak, so
    the main thread can block in wait() and the wall time is exact."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.per_process: Dict = {}
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss(self.process, self.per_process))
            self._done.wait(self.interval)

    def stop(self):
        self._done.set()
        self.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the result")
    parser.add_argument("--interval", type=float, default=0.1, help="tree RSS sampling period (s)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and arguments")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    result = measure(cmd, args.interval)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
