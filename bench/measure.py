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

CPU time (`cpu_s`, with `user_s` and `sys_s`) is getrusage(RUSAGE_CHILDREN)'s user + system
time of the whole tree. RUSAGE_CHILDREN only adds a process's time once someone waits for
it, and a parent may exit without waiting (PySpark leaves its JVM to exit on its own), so
the wrapper makes itself the tree's child subreaper (prctl PR_SET_CHILD_SUBREAPER):
orphaned descendants become its children, and it waits for every one before reading
getrusage. The wall time stops when the command itself exits.

`others_cpu_s`: the machine's busy CPU time during the run (/proc/stat) less the tree's:
what other jobs used meanwhile (~0 on an idle machine; on 2 cores, anything near the
wall time means the figures are not comparable).

`--memory-limit-mb`: when the sampled tree RSS passes it, the whole tree is killed (SIGKILL) and the
result says `memory_limit_exceeded` (a peer that would exhaust the machine fails alone).
"""

import argparse
import ctypes
import errno
import json
import os
import resource
import signal
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


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux 3.4+), so their CPU
    time reaches RUSAGE_CHILDREN when it waits for them."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_new_children(before: set) -> None:
    """Waits for every child that was not one before the command started (the orphans
    adopted as subreaper included); a caller's own children (a test runner's helpers)
    are left alone, else this would wait for them forever."""
    while True:
        waiting = [c.pid for c in psutil.Process().children() if c.pid not in before]
        if not waiting:
            return
        for pid in waiting:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                continue
            except OSError as e:
                if e.errno != errno.EINTR:
                    return


def machine_busy_s() -> Optional[float]:
    """CPU seconds the whole machine has been busy since boot (every state but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def measure(cmd, interval: float = 0.1, memory_limit_mb: Optional[float] = None) -> dict:
    """Runs `cmd` to completion; wall time (start-up included), CPU time of the whole
    tree and memory peaks."""
    subreaper = become_subreaper()
    before = {c.pid for c in psutil.Process().children()}
    earlier = resource.getrusage(resource.RUSAGE_CHILDREN)  # children this process waited for already
    busy = machine_busy_s()
    start = time.perf_counter()
    child = subprocess.Popen(cmd)
    sampler = TreeSampler(child.pid, interval, memory_limit_mb)
    sampler.start()
    child.wait()
    wall = time.perf_counter() - start
    sampler.stop()
    reap_new_children(before)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = usage.ru_utime - earlier.ru_utime, usage.ru_stime - earlier.ru_stime
    busy_after = machine_busy_s()
    others = (busy_after - busy - user - system
             ) if busy is not None and busy_after else None
    # ru_maxrss is in KiB on Linux; MB here are 10**6 bytes.
    children = usage.ru_maxrss * 1024 / 1e6
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
    tree = sampler.peak / 1e6
    processes = [{"pid": pid, "role": "driver" if pid == child.pid else role, "peak_mb": peak / 1e6}
                 for pid, (role, peak) in sorted(sampler.per_process.items())]
    return {"cmd": list(cmd), "returncode": child.returncode, "wall_s": wall,
            "cpu_s": user + system, "user_s": user, "sys_s": system,
            "subreaper": subreaper, "others_cpu_s": None if others is None else max(0.0, others), "memory_limit_mb": memory_limit_mb,
            "memory_limit_exceeded": sampler.killed, "children_maxrss_mb": children, "tree_rss_peak_mb": tree,
            "peak_mb": max(children, tree), "wrapper_maxrss_mb": own, "processes": processes}


def kill_tree(proc: psutil.Process) -> None:
    """SIGKILL to `proc` and every live descendant (children first found, then killed)."""
    try:
        members = proc.children(recursive=True) + [proc]
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


class TreeSampler(threading.Thread):
    """Samples the process tree's summed RSS in the background, keeping the peak, so
    the main thread can block in wait() and the wall time is exact."""

    def __init__(self, pid: int, interval: float, limit_mb: Optional[float] = None):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.limit = limit_mb * 1e6 if limit_mb else None
        self.killed = False
        self.peak = 0
        self.per_process: Dict = {}
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            rss = tree_rss(self.process, self.per_process)
            self.peak = max(self.peak, rss)
            if self.limit and rss > self.limit and not self.killed:
                self.killed = True
                kill_tree(self.process)
            self._done.wait(self.interval)

    def stop(self):
        self._done.set()
        self.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the result")
    parser.add_argument("--interval", type=float, default=0.1, help="tree RSS sampling period (s)")
    parser.add_argument("--memory-limit-mb", type=float, help="kill the tree when its RSS passes this")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and arguments")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    result = measure(cmd, args.interval, args.memory_limit_mb)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
