"""CPU seconds per GB of each stage of a text feature's extract step, in one thread.

    python -m bench.stages                                   # unigram, 1M docs (263 MB)
    python -m bench.stages --config '{"max_tokens": 50000, "output_mode": "tf_idf", "ngrams": 2}'

Runs the job's own functions (no Beam) on the benchmark corpus, batch by batch as a
read task does, and times each with the thread's CPU clock, so the figures hold on a
busy machine too: read (file -> lines), tokenize (standardize and split), count (the
counting of one batch: dictionary encoding, n-gram keys, document frequencies), merge
(a batch's counts into the task's). They are the per-worker costs of docs/cost-model.md. Ranking
and writing are timed by the whole job (`python -m bench.run`), not here.
"""

import argparse
import json
import os
import time

from bench.run import REPO
from bench import corpus as corpus_lib
from pipelines import io as prepro_io
from pipelines import extract
from pipelines.extract import SERIAL
from prepro import spec as spec_lib, text
from prepro.spec import needs_document_frequencies


class Clock:
    """CPU seconds of this thread, summed per stage."""

    def __init__(self):
        self.seconds = {}

    def time(self, stage, function, *args):
        start = time.thread_time()
        result = function(*args)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.thread_time() - start
        return result


def cpu_seconds(path: str, config: dict, batch_bytes: int = 64 << 20) -> dict:
    """{stage: CPU seconds of one thread} for the text feature `config` over `path`."""
    feature = spec_lib.spec_from_dict({"features": {"review": {
        "source": "text", "layer": "TextVectorization", "config": config}}}).features["review"]
    options, doc_counts = feature.options, needs_document_frequencies(feature)
    clock, total = Clock(), None
    batches = prepro_io.read_batches(path, "text", {"text": "string"}, batch_bytes)
    while True:
        batch = clock.time("read", next, batches, None)
        if batch is None:
            break
        docs = text._binary(batch.table.column("text").combine_chunks())
        clock.time("tokenize", extract._unigrams, docs, options)  # standardize + split, as the job does
        counts = clock.time("count", extract.text_counts, docs, options, doc_counts, SERIAL)  # tokenize + count
        total = counts if total is None else clock.time("merge", total.merge, counts)
    seconds = {stage: clock.seconds.get(stage, 0.0) for stage in ("read", "tokenize", "count", "merge")}
    seconds["count"] -= seconds["tokenize"]  # text_counts tokenizes too
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--config", default='{"max_tokens": 50000}', help="TextVectorization options (JSON)")
    parser.add_argument("--batch-bytes", type=int, default=64 << 20)
    parser.add_argument("--data-dir", default=os.path.join(REPO, "bench", "data"))
    args = parser.parse_args(argv)
    path = corpus_lib.write(os.path.join(args.data_dir, f"zipf-{args.docs}.txt"), args.docs)
    seconds = cpu_seconds(path, json.loads(args.config), args.batch_bytes)
    gb = os.path.getsize(path) / 1e9
    print(f"{path}: {gb * 1000:.1f} MB, {json.dumps(json.loads(args.config))}, one thread")
    print(f"{'stage':<12} {'CPU s':>7} {'CPU s/GB':>9}")
    for stage, value in seconds.items():
        print(f"{stage:<12} {value:>7.2f} {value / gb:>9.1f}")
    print(f"{'total':<12} {sum(seconds.values()):>7.2f} {sum(seconds.values()) / gb:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
