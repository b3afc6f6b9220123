"""pipelines.extract.counted_ahead (batches counted ahead in threads, results in order)
and the rule that picks it (counts_whole_batches), down to the bytes of a real job."""

import threading
import time

import pytest

from pipelines import analyze, extract, runners, transforms
from pipelines.errors import InputError
from prepro import spec as spec_lib


def _slow_square(delays):
    def count(item):
        time.sleep(delays.get(item, 0))  # a later item may finish first
        return item * item
    return count


@pytest.mark.parametrize("ahead", [0, 1, 2, 3])
def test_results_come_in_item_order_whatever_finishes_first(ahead):
    delays = {0: 0.05, 1: 0.0, 2: 0.03, 5: 0.02}
    assert list(extract.counted_ahead(_slow_square(delays), iter(range(8)), ahead)) == [(i, i * i) for i in range(8)]


def test_counts_run_in_other_threads_at_most_ahead_at_once():
    lock, running, most, threads = threading.Lock(), [0], [0], set()

    def count(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return item

    assert [r for _, r in extract.counted_ahead(count, range(10), 2)] == list(range(10))
    assert most[0] == 2
    assert all(name.startswith("prepro-count") for name in threads)


def test_the_first_error_in_item_order_is_raised_after_the_results_before_it():
    def count(item):
        if item == 3:
            time.sleep(0.05)  # item 4 fails first in time, but comes later
            raise InputError("bad row", path="a.txt", row=3)
        if item == 4:
            raise InputError("bad row", path="a.txt", row=4)
        return item

    seen = []
    with pytest.raises(InputError, match="row 3"):
        for item, _ in extract.counted_ahead(count, range(10), 2):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_a_caller_that_stops_early_starts_no_more_counts():
    started = []

    def count(item):
        started.append(item)
        return item

    results = extract.counted_ahead(count, range(100), 2)
    assert next(results) == (0, 0)
    results.close()
    assert len(started) <= 3  # the one returned and the two counted ahead of it
    assert not [t for t in threading.enumerate() if t.name.startswith("prepro-count")]


@pytest.mark.parametrize("config, numeric, whole", [
    ({"max_tokens": 100}, False, True),
    ({"max_tokens": 100, "ngrams": 1}, False, True),
    ({"max_tokens": 100, "ngrams": 2}, False, False),
    ({"max_tokens": 100, "ngrams": [1, 3]}, False, False),
    ({"max_tokens": 100}, True, False),
])
def test_whole_batches_only_without_ngrams_or_numeric_features(config, numeric, whole):
    features = {"review": {"source": "text", "layer": "TextVectorization", "config": config}}
    if numeric:
        features["price"] = {"source": "price", "layer": "Normalization"}
    spec = spec_lib.spec_from_dict({"features": features})
    assert extract.counts_whole_batches(spec) is whole
    plan = runners.make_runner([], total_bytes=1 << 20)
    assert plan.batch_bytes(extract.counts_whole_batches(spec)) == (
        runners.IN_PROCESS_WHOLE_BATCH_BYTES if whole else runners.IN_PROCESS_BATCH_BYTES)


def test_a_unigram_job_writes_the_same_bytes_counted_whole_or_in_parts(tmp_path, monkeypatch):
    """The real job, in-process with 2 threads: batches counted whole and ahead (the
    default for this spec) and the same batches each cut into parts give one artifact."""
    corpus = tmp_path / "docs.txt"
    words = [b"Alpha", b"beta,", b"GAMMA", b"delta!", b"eps"] + [b"w%d" % i for i in range(3000)]
    corpus.write_bytes(b"".join(b" ".join(words[(i * k) % len(words)] for k in range(1, 9)) + b"\n"
                                for i in range(40000)))
    spec = spec_lib.spec_from_dict({"features": {"review": {"source": "text", "layer": "TextVectorization",
                                                       "config": {"max_tokens": 500}}}})
    monkeypatch.setattr(runners.Plan, "extract_threads", property(lambda self: 2))
    outputs = {}
    for whole in (True, False):
        for module in (transforms, analyze):  # both read the rule (batch size, counting)
            monkeypatch.setattr(module, "counts_whole_batches", lambda spec, whole=whole: whole)
        out = tmp_path / f"out-{whole}"
        analyze.run_analyze(spec, [str(corpus)], "text", str(out), batch_bytes=64 << 10, golden_rows=4)
        outputs[whole] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert outputs[True] == outputs[False]
    assert len(outputs[True]) >= 3


def test_a_bad_row_deep_in_a_file_counted_ahead_is_named_and_nothing_is_published(tmp_path, monkeypatch):
    """Batches counted ahead: the first bad row in file order is the one reported (a later
    batch's bad row may be counted first), with its file and row, and no artifact is left."""
    corpus = tmp_path / "docs.txt"
    lines = [b"row %d alpha beta" % i for i in range(20000)]
    lines[12344] = b"bad \xff first"  # row 12,345
    lines[19000] = b"bad \xfe later"
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    spec = spec_lib.spec_from_dict({"features": {"review": {"source": "text", "layer": "TextVectorization"}}})
    assert extract.counts_whole_batches(spec)
    monkeypatch.setattr(runners.Plan, "extract_threads", property(lambda self: 2))
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        analyze.run_analyze(spec, [str(corpus)], "text", str(out), batch_bytes=16 << 10, golden_rows=0)
    message = str(error.value)
    assert "row 12345" in message and "docs.txt" in message and "review" in message, message
    assert not (out / "manifest.json").exists()
