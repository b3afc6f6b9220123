"""What every peer program shares: Keras's punctuation set, the command line and the
result file. Kept free of heavy imports: a peer's start-up is part of its time.

    python -m bench.peers.<tool>_job --corpus C.txt --top-k 49998 [--ngrams 2 --tf-idf] \
        --result out.json

Every peer lower-cases, deletes Keras's punctuation (`DEFAULT_STRIP_REGEX` of
`keras.layers.TextVectorization`), splits on single spaces dropping empty tokens, adds
the bigrams of adjacent tokens of a document joined by one space when `--ngrams 2`,
counts, and keeps the `--top-k` tokens by count descending, ties by token descending
(UTF-8 byte order), which is Keras's order (`np.lexsort((tokens, counts))[::-1]`). With
`--tf-idf` it also counts each token's documents and computes Keras's IDF
`log(1 + num_docs / (1 + doc_freq))`.
"""

import argparse
import json
import time

# keras.src.layers.preprocessing.text_vectorization.DEFAULT_STRIP_REGEX, verbatim.
PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


def parse_args(argv=None, doc: str = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="text file, one document per line")
    parser.add_argument("--top-k", type=int, required=True, help="tokens to keep")
    parser.add_argument("--ngrams", type=int, choices=(1, 2), default=1, help="1: words; 2: words and bigrams")
    parser.add_argument("--tf-idf", action="store_true", help="also document frequencies and IDF")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    return parser.parse_args(argv)


def write_result(path: str, tool: str, version: str, tokens, counts, doc_counts=None, idf=None,
                 documents=None, started: float = None) -> None:
    """The top-k in rank order, and how long the job took inside the process."""
    result = {"tool": tool, "version": version, "tokens": list(tokens), "counts": [int(c) for c in counts],
              "doc_counts": None if doc_counts is None else [int(c) for c in doc_counts],
              "idf": None if idf is None else [float(w) for w in idf],
              "documents": documents,
              "in_process_s": None if started is None else time.perf_counter() - started}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f)
