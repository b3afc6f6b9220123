"""Named points where a test can kill the job, to prove what a crash leaves behind.

    PREPRO_FAILPOINTS=rank prepro analyze ...       # SIGKILLs the process that first ranks a shard
    PREPRO_FAILPOINTS=read:stop prepro analyze ...  # SIGSTOPs it there (a test resumes it: SIGCONT)
    PREPRO_FAILPOINTS=read:sleep prepro analyze ... # every pass there takes SLEEP_SECONDS longer

The pattern of FoundationDB's and etcd's failpoints: production code marks the moments
that matter (`reach("publish.manifest")`); with the variable unset, `reach` is a set
lookup. A real SIGKILL, not an exception, so nothing gets a chance to clean up, as in
a crash, an OOM kill or a preempted machine. (`sleep` slows a job down instead, so a
test of its progress sees it move without reading much.) The variable is inherited by Beam worker
processes and the golden-rows helper, so a point reached there kills that process.

Points (in job order): read, base (an update re-cutting its base's token state), count,
rank, state, kept_state (with --keep-state), golden, publish.moved, publish.manifest,
publish.cleanup.
"""

import os
import signal
import time

POINTS = ("read", "base", "count", "rank", "state", "kept_state", "golden", "publish.moved", "publish.manifest", "publish.cleanup")
_ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}
SLEEP_SECONDS = 0.1
_ARMED = dict((item.split(":", 1) + ["kill"])[:2] for item in os.environ.get("PREPRO_FAILPOINTS", "").split(",") if item)


def reach(point: str) -> None:
    """Kills (stops, slows down) this process if `point` is armed."""
    if point in _ARMED:
        if _ARMED[point] == "sleep":
            time.sleep(SLEEP_SECONDS)
            return
        os.kill(os.getpid(), _ACTIONS[_ARMED[point]])
