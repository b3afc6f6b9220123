"""Deterministic synthetic corpora for the benchmarks: Zipf-distributed words.

    python -m bench.corpus --docs 100000 --out bench/data/zipf-100k.txt

One document per line, ~270 bytes and ~45 words each (a 100,000-document corpus is
~27 MB). Word frequencies follow a Zipf-Mandelbrot law over 200,000 word types, so
the vocabulary has a long tail of rare words and many ties at any cut. Some words are
capitalised or carry punctuation, so standardization does real work. Built with
NumPy and Arrow (no Python loop per word), so a 1,000,000-document corpus takes
seconds; the same arguments always give the same bytes.
"""

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WORD_TYPES = 200_000
ZIPF_EXPONENT = 1.07
ZIPF_SHIFT = 2.7
MEAN_WORDS = 45


def word_types(rng: np.random.Generator) -> pa.Array:
    # Frequent words are short, as in natural language.
    noise = rng.normal(0, 1.5, WORD_TYPES)
    lengths = np.clip(np.round(1.5 + 1.3 * np.log10(np.arange(WORD_TYPES) + 2) + noise), 1, 16).astype(np.int64)
    letters = rng.integers(ord("a"), ord("z") + 1, int(lengths.sum()), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    words = pa.BinaryArray.from_buffers(pa.binary(), WORD_TYPES, [None, pa.py_buffer(offsets),
                                                                   pa.py_buffer(letters.tobytes())])
    return pc.utf8_capitalize(words.cast(pa.string())), words.cast(pa.string())


BLOCK_DOCS = 1_000_000  # documents generated at once: Arrow's 2 GB limit per string array, and memory


def generate(num_docs: int, seed: int = 2026) -> pa.Array:
    """The corpus as an Arrow string array, one document per element (up to BLOCK_DOCS)."""
    rng = np.random.default_rng(seed)
    return _documents(num_docs, rng, *word_types(rng))


def blocks(num_docs: int, seed: int = 2026):
    """The corpus in string arrays of at most BLOCK_DOCS documents. Up to BLOCK_DOCS it
    is `generate`'s; a bigger corpus draws its blocks from one set of word types with a
    generator per block, so any size is deterministic and follows the same law."""
    if num_docs <= BLOCK_DOCS:
        yield generate(num_docs, seed)
        return
    types = word_types(np.random.default_rng(seed))
    for k, start in enumerate(range(0, num_docs, BLOCK_DOCS)):
        yield _documents(min(BLOCK_DOCS, num_docs - start), np.random.default_rng([seed, k]), *types)


def _documents(num_docs: int, rng: np.random.Generator, capitalised: pa.Array, plain: pa.Array) -> pa.Array:
    ranks = np.arange(WORD_TYPES, dtype=np.float64)
    p = 1.0 / (ranks + ZIPF_SHIFT) ** ZIPF_EXPONENT
    doc_lengths = rng.poisson(MEAN_WORDS, num_docs)
    total = int(doc_lengths.sum())
    word_ids = rng.choice(WORD_TYPES, size=total, p=p / p.sum())
    capital = rng.random(total) < 0.05
    words = pc.if_else(pa.array(capital), capitalised.take(word_ids), plain.take(word_ids))
    suffix = pa.array(np.array(["", ",", ".", "!"])[rng.choice(4, total, p=[0.9, 0.06, 0.03, 0.01])])
    words = pc.binary_join_element_wise(words, suffix, "")
    offsets = np.concatenate([[0], np.cumsum(doc_lengths)]).astype(np.int32)
    docs = pa.ListArray.from_arrays(pa.array(offsets), words)
    return pc.binary_join(docs, " ")


def write(path: str, num_docs: int, seed: int = 2026) -> str:
    """Writes the corpus once; an existing file of the same name is reused."""
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for docs in blocks(num_docs, seed):
            for chunk in docs.chunks if isinstance(docs, pa.ChunkedArray) else [docs]:
                f.write("\n".join(chunk.to_pylist()).encode("utf-8") + b"\n")
    os.replace(tmp, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    path = write(args.out, args.docs, args.seed)
    print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
