"""Keras `adapt()` alone, then parity with prepro's artifacts, in one fresh process.

    python -m bench.adapt_job --corpus C.txt --config '{"max_tokens": 50000}' \
        --result out.json [--artifacts DIR --feature review]

Times only the `layer.adapt(np.array(docs, dtype=object))` call: Keras is imported and
the corpus read before the clock starts. The peak memory recorded right after adapt()
is this process's ru_maxrss at that moment (imports, documents and adapt). Then, if
artifacts are given, builds prepro's layer and checks it equals the adapted one:
identical `get_vocabulary()` and identical outputs on the first `--probe` documents.
"""

import argparse
import json
import resource
import time

PROBE_BATCH = 250  # documents per call when comparing outputs (bounds memory)


def read_docs(path: str):
    """One document per line, as Beam's ReadFromText (and prepro's text format) reads it:
    "\\n" ends a line and one "\\r" before it is dropped."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def keras_config(config: dict) -> dict:
    """The spec's layer options as Keras's constructor takes them."""
    config = dict(config)
    if isinstance(config.get("ngrams"), list):
        config["ngrams"] = tuple(config["ngrams"])
    return config


def maxrss_mb() -> float:
    """Peak RSS so far of this process (ru_maxrss is KiB on Linux), in 10**6 bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def check_parity(adapted, artifacts: str, feature: str, probe) -> dict:
    """PASS if prepro's layer has adapt()'s vocabulary and gives the same outputs."""
    import numpy as np
    import prepro
    try:
        built = prepro.load(artifacts).layer(feature)
        if built.get_vocabulary() != adapted.get_vocabulary():
            return {"parity": "FAIL", "detail": _vocabulary_difference(built.get_vocabulary(),
                                                                       adapted.get_vocabulary())}
        for start in range(0, len(probe), PROBE_BATCH):
            batch = probe[start:start + PROBE_BATCH]
            np.testing.assert_array_equal(np.asarray(built(batch)), np.asarray(adapted(batch)),
                                          err_msg=f"documents {start}..{start + len(batch) - 1}")
    except Exception as e:  # a parity failure is a result to report, not a crash
        return {"parity": "FAIL", "detail": f"{type(e).__name__}: {str(e)[:2000]}"}
    return {"parity": "PASS", "detail": f"same vocabulary ({len(adapted.get_vocabulary())} entries) "
                                        f"and outputs on {len(probe)} documents"}


def _vocabulary_difference(built, adapted) -> str:
    built, adapted = [str(t) for t in built], [str(t) for t in adapted]
    first = next((i for i, (a, b) in enumerate(zip(built, adapted)) if a != b), min(len(built), len(adapted)))
    return (f"vocabularies differ: prepro {len(built)} entries, adapt {len(adapted)}; first "
            f"difference at index {first}: prepro {built[first:first + 3]!r}, adapt {adapted[first:first + 3]!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--config", required=True, help="TextVectorization options as JSON")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--artifacts", help="prepro artifact directory to check against")
    parser.add_argument("--feature", default="review")
    parser.add_argument("--probe", type=int, default=2000, help="documents whose outputs are compared")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    if not keras.__version__.startswith("3."):
        raise SystemExit(f"expected Keras 3, got {keras.__version__} (is TF_USE_LEGACY_KERAS set?)")
    docs = np.array(read_docs(args.corpus), dtype=object)
    layer = keras.layers.TextVectorization(**keras_config(json.loads(args.config)))
    start = time.perf_counter()
    layer.adapt(docs)
    result = {"adapt_s": time.perf_counter() - start, "peak_after_adapt_mb": maxrss_mb(),
              "documents": len(docs), "vocabulary_size": layer.vocabulary_size(),
              "keras_version": keras.__version__}
    if args.artifacts:
        result.update(check_parity(layer, args.artifacts, args.feature, docs[:args.probe]))
    else:
        result.update({"parity": "n/a", "detail": "no prepro artifacts to compare"})
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
