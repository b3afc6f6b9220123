"""The benchmark's peers (bench/peers/: Polars, DuckDB, Spark local) compute the same
top-k as prepro, so none is timed doing less work: each real program runs on a small
generated corpus (capitals, punctuation, many ties at the cut) and its result must be
SAME as a real `prepro analyze` artifact by bench.run's own check, for the unigram
(int mode) and the tf_idf bigram workloads; the check must also see a DIFFERENT result.
bench.measure's CPU seconds must include a descendant its parent never waited for.

CI installs the peers (requirements.lock pins them): there a missing one fails; elsewhere
its tests are skipped naming the bench extra."""

import json
import os
import subprocess
import sys
import time

import pytest

from bench import corpus, measure, run
from pipelines.analyze import run_analyze
from prepro.spec import spec_from_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = 300
CONFIGS = {"unigram": {"max_tokens": 400},
           "ngram-tfidf": {"max_tokens": 600, "output_mode": "tf_idf", "ngrams": 2}}


def require(module: str):
    if os.environ.get("CI"):
        return __import__(module)  # CI installs requirements.lock, which pins every peer
    return pytest.importorskip(module, reason=f"the benchmark's peer needs {module}: {run.BENCH_EXTRA}")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The corpus and a prepro artifact per workload."""
    root = tmp_path_factory.mktemp("peers")
    path = corpus.write(str(root / f"zipf-{DOCS}.txt"), DOCS)
    artifacts = {}
    for name, config in CONFIGS.items():
        spec = spec_from_dict({"features": {run.FEATURE: {"source": "text", "layer": "TextVectorization",
                                                          "config": config}}})
        artifacts[name] = str(root / f"{name}-artifacts")
        run_analyze(spec, [path], "text", artifacts[name], golden_rows=0)
    return root, path, artifacts


def run_peer(tool: str, root, path: str, workload: str) -> str:
    config = CONFIGS[workload]
    out = str(root / f"{tool}-{workload}.json")
    cmd = [sys.executable, "-m", run.PEERS[tool][1], "--corpus", path, "--top-k", str(run.top_k(config)),
           "--ngrams", str(config.get("ngrams", 1)), "--result", out]
    if config.get("output_mode") == "tf_idf":
        cmd.append("--tf-idf")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("workload", sorted(CONFIGS))
@pytest.mark.parametrize("tool", sorted(run.PEERS))
def test_peer_top_k_is_prepros(tool, workload, small):
    require(run.PEERS[tool][0])
    root, path, artifacts = small
    out = run_peer(tool, root, path, workload)
    with open(out, encoding="utf-8") as f:
        result = json.load(f)
    k = run.top_k(CONFIGS[workload])
    assert len(result["tokens"]) == k  # the corpus has more distinct tokens than the cut keeps
    assert result["counts"][-1] <= 3   # the cut falls among ties, decided by token order
    check = run.compare_top_k(out, artifacts[workload], CONFIGS[workload].get("output_mode") == "tf_idf")
    assert check["parity"] == "SAME", check["parity_detail"]
    if workload == "ngram-tfidf":
        assert result["documents"] == DOCS and "IDF within" in check["parity_detail"]
        assert any(" " in t for t in result["tokens"])  # bigrams made the cut


def test_the_check_reports_how_a_top_k_differs(small, tmp_path):
    import prepro
    _, _, artifacts = small
    arts = prepro.load(artifacts["ngram-tfidf"])
    tokens, counts = arts.vocabulary(run.FEATURE), [int(c) for c in arts.token_counts(run.FEATURE)]
    doc_counts = [int(c) for c in arts.document_frequencies(run.FEATURE)]
    idf = [float(w) for w in arts.idf_weights(run.FEATURE)]

    def check(**changes):
        body = dict(tokens=list(tokens), counts=list(counts), doc_counts=list(doc_counts), idf=list(idf))
        body.update(changes)
        out = str(tmp_path / "peer.json")
        with open(out, "w") as f:
            json.dump(body, f)
        return run.compare_top_k(out, artifacts["ngram-tfidf"], tf_idf=True)

    assert check()["parity"] == "SAME"
    swapped = list(tokens)
    swapped[5], swapped[6] = swapped[6], swapped[5]
    different = check(tokens=swapped)
    assert different["parity"] == "DIFFERENT"
    assert different["parity_detail"].startswith(f"2 of {len(tokens)} ranks differ") and "rank 5" in different["parity_detail"]
    shorter = check(tokens=tokens[:-3], counts=counts[:-3])
    assert shorter["parity"] == "DIFFERENT" and "3 of prepro's tokens absent" in shorter["parity_detail"]
    assert "counts differ" in check(counts=[c + (i == 9) for i, c in enumerate(counts)])["parity_detail"]
    assert "document frequencies differ" in check(doc_counts=[d - (i == 0) for i, d in enumerate(doc_counts)])[
        "parity_detail"]
    off = check(idf=[w * (1 + 1e-5 * (i == 2)) for i, w in enumerate(idf)])
    assert off["parity"] == "DIFFERENT" and "IDF off by" in off["parity_detail"] and "rank 2" in off["parity_detail"]


def test_measure_counts_the_cpu_of_an_orphaned_descendant(tmp_path):
    # The parent exits at once; its child burns ~0.6 s of CPU, never waited for (as PySpark's JVM).
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    parent = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {burn!r}])"
    result = measure.measure([sys.executable, "-c", parent])
    assert result["returncode"] == 0 and result["subreaper"]
    assert result["cpu_s"] >= 0.55, result
    assert result["wall_s"] < result["cpu_s"]  # the wall time stopped when the command exited


def test_measure_leaves_its_callers_other_children_alone():
    """A child the caller already had (pytest's multiprocessing resource tracker, in CI)
    is neither waited for (measure hung on it) nor counted."""
    lingering = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        start = time.monotonic()
        result = measure.measure([sys.executable, "-c", "pass"])
        assert time.monotonic() - start < 30 and result["returncode"] == 0
        assert lingering.poll() is None
    finally:
        lingering.kill()
        lingering.wait()
    spent = measure.measure([sys.executable, "-c", "pass"])  # the lingering child's CPU is not this run's
    assert spent["cpu_s"] < 1.0, spent


def test_measure_kills_a_tree_past_its_memory_limit():
    grow = "import time\nblocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20)); time.sleep(0.05)"
    result = measure.measure([sys.executable, "-c", grow], interval=0.05, memory_limit_mb=300)
    assert result["memory_limit_exceeded"] and result["returncode"] != 0
    assert result["peak_mb"] > 300


def test_throughput_past_start_up_is_the_difference_of_two_sizes():
    def case(docs, mb, figures):
        c = run.Case("unigram", run.WORKLOADS["unigram"], docs, "corpus", "workdir")
        c.__dict__["_mb"] = mb
        c.results = {tool: {"status": "ok", "wall_s": w, "cpu_s": cpu} for tool, (w, cpu) in figures.items()}
        c.results["spark"] = {"status": "skipped", "why": "not installed"}
        return c
    small = case(1_000, 100.0, {"prepro": (10.0, 12.0), "polars": (2.0, 3.0)})
    big = case(4_000, 400.0, {"prepro": (40.0, 72.0), "polars": (5.0, 9.0)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run.Case, "input_mb", property(lambda self: self.__dict__["_mb"]))
        rates = run.throughput([small, big])["unigram"]
        text = run.throughput_table({"unigram": rates})
    assert rates["prepro"]["mb_s"] == pytest.approx(10.0)           # 300 MB in 30 s more
    assert rates["prepro"]["cpu_s_per_gb"] == pytest.approx(200.0)  # 60 CPU s for 0.3 GB more
    assert rates["polars"]["mb_s"] == pytest.approx(100.0) and rates["polars"]["cpu_s_per_gb"] == pytest.approx(20.0)
    assert "spark" not in rates  # skipped at both sizes: listed in the notes, not as a rate
    assert "10.00x" in text and "0.10x" in text
