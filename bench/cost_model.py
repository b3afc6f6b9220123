"""The cost model's measurements (docs/cost-model.md), and its prediction for a cluster.

    python -m bench.cost_model                                   # unigram, 1M docs (263 MB)
    python -m bench.cost_model --config '{"max_tokens": 50000, "output_mode": "tf_idf", "ngrams": 2}'
    python -m bench.cost_model --predict-tb 1 --workers 100 --cores 4

Measures, on one machine, what a job costs per GB of input in each stage a cluster
runs in parallel or not:
- extract (read, tokenize, count; every worker, in parallel): CPU seconds per GB of
  one thread (`bench.stages`, the thread's CPU clock);
- rank (a shard's part files merged into exact counts and ranked; in parallel over at
  most `--shards` workers): CPU seconds per GB, the `rank_shard` calls' thread time
  in a real in-process job;
- finalize (the shards' runs merged into the vocabulary and written, the manifest; one
  worker, serial): seconds, which depend on max_tokens and the run count, not on the
  input size;
- the work directory's traffic (part files written, then read once by the ranking):
  bytes per GB, the job's `part_bytes_written` counter.
Then predicts the wall time of `--predict-tb` TB on `--workers` workers of `--cores`
cores (one SDK process per core, as Dataflow runs Python) and names the stage that
limits it. Storage bandwidth is not modelled beyond the traffic figure.
"""

import argparse
import functools
import json
import os
import shutil
import tempfile
import time

from bench import corpus as corpus_lib, stages
from bench.run import REPO

STARTUP_S = 180.0  # a Dataflow job's worker start-up (VMs, container, Beam): a typical figure, not measured here


class Timed:
    """Wraps a function to sum its calls' thread CPU time (the in-process runner calls it
    in this process). It is replaced in every module holding it, and the wrapper
    carries the original's module and name, so Beam's pickling of the steps refers to it
    by name and the runner finds the wrapper (a wrapper pickled by value would count in
    a copy)."""

    def __init__(self, function, *modules):
        self.function, self.modules, self.seconds, self.calls = function, modules, 0.0, 0

    def __enter__(self):
        @functools.wraps(self.function)
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return self.function(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start
                self.calls += 1
        for module in self.modules:
            setattr(module, self.function.__name__, timed)
        return self

    def __exit__(self, *exc):
        for module in self.modules:
            setattr(module, self.function.__name__, self.function)
        return False


def measure(path: str, config: dict, shards: int) -> dict:
    from pipelines import analyze, transforms, vocabulary
    from prepro import spec as spec_lib
    spec = spec_lib.spec_from_dict({"features": {"review": {"source": "text", "layer": "TextVectorization",
                                                            "config": config}}})
    out = tempfile.mkdtemp(prefix="prepro-cost-model-")
    counters = {}
    try:
        with Timed(vocabulary.rank_shard, vocabulary, transforms) as rank, \
                Timed(transforms.vocabulary_entry, transforms) as final:
            start = time.perf_counter()
            analyze.run_analyze(spec, [path], "text", os.path.join(out, "arts"), num_shards=shards,
                                golden_rows=0, counters=counters)
            wall = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall, "rank_cpu_s": rank.seconds, "rank_calls": rank.calls,
            "finalize_cpu_s": final.seconds, "part_bytes": counters.get("part_bytes_written", 0)}


def predict(per_gb: dict, finalize_s: float, tb: float, workers: int, cores: int, shards: int) -> dict:
    gb = tb * 1000
    processes = workers * cores
    extract = per_gb["extract"] * gb / processes
    rank = per_gb["rank"] * gb / min(shards, processes)
    stages_s = {"extract": extract, "rank": rank, "finalize": finalize_s}
    return {"stages_s": stages_s, "total_s": STARTUP_S + sum(stages_s.values()),
            "limit": max(stages_s, key=stages_s.get),
            "work_dir_tb": per_gb["part_bytes"] * gb / 1e12}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--config", default='{"max_tokens": 50000}', help="TextVectorization options (JSON)")
    parser.add_argument("--shards", type=int, default=16, help="vocabulary shards (the job's --shards)")
    parser.add_argument("--predict-tb", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--cores", type=int, default=4, help="cores (SDK processes) per worker")
    parser.add_argument("--data-dir", default=os.path.join(REPO, "bench", "data"))
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    path = corpus_lib.write(os.path.join(args.data_dir, f"zipf-{args.docs}.txt"), args.docs)
    gb = os.path.getsize(path) / 1e9
    extract = stages.cpu_seconds(path, config)
    job = measure(path, config, args.shards)
    per_gb = {"extract": sum(extract.values()) / gb, "rank": job["rank_cpu_s"] / gb,
              "part_bytes": job["part_bytes"] / gb}
    print(f"{path}: {gb * 1000:.1f} MB, {json.dumps(config)}, {args.shards} shards")
    print(f"extract   {per_gb['extract']:7.1f} CPU s/GB  ("
          + ", ".join(f"{k} {v / gb:.1f}" for k, v in extract.items()) + ")")
    print(f"rank      {per_gb['rank']:7.1f} CPU s/GB  ({job['rank_calls']} shard rankings)")
    print(f"finalize  {job['finalize_cpu_s']:7.2f} CPU s     (serial: the runs merged, the vocabulary written)")
    print(f"work dir  {per_gb['part_bytes'] / 1e6:7.1f} MB/GB    (part files written, each read once)")
    print(f"this run  {job['wall_s']:7.1f} s in-process")
    model = predict(per_gb, job["finalize_cpu_s"], args.predict_tb, args.workers, args.cores, args.shards)
    stages_s = model["stages_s"]
    print(f"\npredicted: {args.predict_tb:g} TB on {args.workers} workers x {args.cores} cores, {args.shards} shards: "
          f"{model['total_s'] / 60:.1f} min = start-up {STARTUP_S:.0f} s + extract {stages_s['extract']:.0f} s "
          f"+ rank {stages_s['rank']:.0f} s + finalize {stages_s['finalize']:.1f} s; limited by {model['limit']}; "
          f"work directory {model['work_dir_tb']:.2f} TB written and read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
