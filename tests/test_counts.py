"""The fast paths agree with the plain definitions they replace."""

import os
import pickle
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings, strategies as st

from pipelines import extract, vocabulary
from prepro import text, vocab
from prepro.stats.counts import TokenCounts, shard_of


def random_docs(seed, n=300):
    rng = random.Random(seed)
    words = ["a", "b", "ab", "ba", "é", "日本", "x" * 20, "x" * 19 + "y"]
    return pa.array([" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) for _ in range(n)],
                    pa.binary())


def as_dict(counts: TokenCounts):
    t = counts.table()
    return {tok: (c, d) for tok, c, d in zip(t["token"].to_pylist(), t["count"].to_pylist(),
                                             t["doc_count"].to_pylist())}


@pytest.mark.parametrize("ngrams", [None, 2, 3, (1, 3), (2,)])
@pytest.mark.parametrize("with_doc_counts", [True, False])
def test_ngram_ids_equal_string_counting(ngrams, with_doc_counts):
    docs = random_docs(seed=len(str(ngrams)))
    options = {"standardize": None, "split": "whitespace", "ngrams": ngrams}
    doc_ids, tokens = text.unigrams(docs, options)
    encoded = pc.dictionary_encode(tokens)
    fast = TokenCounts.from_ngram_ids(doc_ids, encoded.indices.to_numpy(), encoded.dictionary,
                                      text.ngram_widths(ngrams), len(docs), with_doc_counts)
    plain = TokenCounts.from_tokens(*text.tokenize(docs, options), len(docs), with_doc_counts)
    assert as_dict(fast) == as_dict(plain)
    assert (fast.documents, fast.occurrences) == (plain.documents, plain.occurrences)


@pytest.mark.parametrize("split, ngrams", [("whitespace", None), ("whitespace", (1, 3)),
                                           ("character", 2), (None, 2)])
@pytest.mark.parametrize("with_doc_counts", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_cut_into_parts_counts_like_one_piece(monkeypatch, split, ngrams, with_doc_counts, threads):
    """Parts tokenized in threads, unified dictionaries and merged keys (or, where widths
    can collide, merged string counts) give the counts of the whole batch."""
    docs = random_docs(seed=7, n=400)
    options = {"standardize": "lower_and_strip_punctuation", "split": split, "ngrams": ngrams}
    monkeypatch.setattr(extract, "PART_BYTES", 64)  # ~40 parts of a few documents each
    assert len(extract._parts(docs, extract.PART_BYTES)) > 20
    pool = extract.Threads(threads)
    try:
        counted = extract.text_counts(docs, options, with_doc_counts, pool)
    finally:
        pool.close()
    plain = TokenCounts.from_tokens(*text.tokenize(docs, options), len(docs), with_doc_counts)
    assert as_dict(counted) == as_dict(plain)
    assert (counted.documents, counted.occurrences) == (plain.documents, plain.occurrences)


@pytest.mark.parametrize("split", ["whitespace", "character", None])
def test_a_part_tokenized_in_pieces_is_tokenized_whole(monkeypatch, split):
    """extract._unigrams (pieces of PART_BYTES, joined) gives text.unigrams' tokens and
    document indices, for a part that is a slice of its batch."""
    docs = random_docs(seed=11, n=300).slice(5, 250)
    options = {"standardize": "lower_and_strip_punctuation", "split": split, "ngrams": None}
    monkeypatch.setattr(extract, "PART_BYTES", 100)
    doc_ids, tokens = extract._unigrams(docs, options)
    whole_ids, whole_tokens = text.unigrams(docs, options)
    assert tokens.equals(whole_tokens) and doc_ids.tolist() == whole_ids.tolist()


def test_parts_are_whole_consecutive_documents():
    docs = random_docs(seed=3, n=500)
    for part_bytes in (1, 10, 100, 10_000):
        parts = extract._parts(docs.slice(17, 400), part_bytes)
        assert pa.concat_arrays(parts).equals(docs.slice(17, 400))
        assert all(len(p) for p in parts)


def test_counts_bytes_and_pickle_round_trip():
    docs = random_docs(seed=5)
    a = TokenCounts.from_tokens(*text.tokenize(docs, {"standardize": None, "split": "whitespace",
                                                      "ngrams": 2}), len(docs))
    pending = a.merge(a)  # two pending tables, not yet aggregated
    for counts in (pending, TokenCounts.empty(pa.binary()), TokenCounts.empty(pa.int64())):
        back = TokenCounts.from_bytes(counts.to_bytes())
        assert len(back._tables) == len(counts._tables)
        assert (back.token_type, back.documents, back.occurrences) == \
            (counts.token_type, counts.documents, counts.occurrences)
        assert as_dict(back) == as_dict(counts)
    assert as_dict(pickle.loads(pickle.dumps(pending))) == as_dict(pending)


def random_counts(rng, n, token_type=pa.binary()):
    """`n` distinct tokens with counts full of ties, as one table of TokenCounts."""
    ids = rng.permutation(10 * n)[:n]
    tokens = pa.array(ids) if token_type == pa.int64() else pa.array([b"t%d" % i for i in ids], pa.binary())
    counts = rng.integers(1, 5, n) ** rng.integers(1, 4, n)
    return TokenCounts(token_type, [pa.table({"token": tokens, "count": counts, "doc_count": counts})], 7, 11)


@pytest.mark.parametrize("token_type", [pa.binary(), pa.int64()])
def test_part_files_split_counts_into_shards_and_read_back(tmp_path, token_type):
    counts = random_counts(np.random.default_rng(1), 5000, token_type)
    written = []
    refs = list(vocabulary.write_parts("f", counts, 4, str(tmp_path), written.append))
    assert [shard for shard, _ in refs] == [0, 1, 2, 3] and len({r.path for _, r in refs}) == 1
    assert written == [os.path.getsize(refs[0][1].path)]  # the part_bytes_written counter's figure
    back = [vocabulary.read_part(ref, shard, token_type) for shard, ref in refs]
    assert sum(len(as_dict(b)) for b in back) == 5000
    assert {k: v for b in back for k, v in as_dict(b).items()} == as_dict(counts)
    assert [(b.documents, b.occurrences) for b in back] == [(7, 11), (0, 0), (0, 0), (0, 0)]


@pytest.mark.parametrize("token_type", [pa.binary(), pa.int64()])
@pytest.mark.parametrize("limit", [None, 1, 999, 5000, 10**6])
def test_batched_merge_of_runs_equals_one_sort(tmp_path, monkeypatch, token_type, limit):
    monkeypatch.setattr(vocabulary, "_RUN_BATCH", 37)  # many batches per run
    from prepro.spec import FeatureSpec
    feature = FeatureSpec("f", "f", "IntegerLookup" if token_type == pa.int64() else "StringLookup", {})
    counts = random_counts(np.random.default_rng(2), 5000, token_type)
    shards = counts.shards(7)
    runs = [vocabulary.write_run(feature, shard, str(tmp_path), i) for i, shard in enumerate(shards)]
    merged = pa.concat_tables(vocabulary.merged_ranking(runs, limit, token_type))
    expected = counts.ranked(limit)
    assert merged["token"].to_pylist() == expected["token"].to_pylist()
    assert merged["count"].to_pylist() == expected["count"].to_pylist()


def test_ngram_ids_refuse_keys_that_overflow():
    ids = np.arange(10, dtype=np.int64)
    dictionary = pa.array([b"t%d" % i for i in range(3_000_000)], pa.binary())
    assert TokenCounts.from_ngram_ids(np.zeros(10, np.int64), ids, dictionary, (1, 3), 1) is None


def test_ranked_with_limit_equals_full_sort_cut():
    rng = np.random.default_rng(0)
    tokens = pa.array([b"t%d" % i for i in range(5000)], pa.binary())
    counts = rng.integers(1, 6, 5000)  # heavy ties everywhere
    table = pa.table({"token": tokens, "count": counts, "doc_count": counts})
    full = TokenCounts(pa.binary(), [table]).ranked()
    for limit in (1, 7, 999, 4999, 5000, 6000):
        assert TokenCounts(pa.binary(), [table]).ranked(limit).equals(full.slice(0, limit))


def test_line_breaks_are_exactly_what_splitlines_breaks_at():
    breaks = [chr(i) for i in range(0x110000)
              if not 0xD800 <= i <= 0xDFFF and len(("a" + chr(i) + "b").splitlines()) > 1]
    assert sorted(breaks) == sorted(vocab.LINE_BREAKS)


def test_file_unsafe_positions_agree_with_is_file_safe():
    tokens = [b"a", b"", b"x\n", "y\x85".encode(), b"ok", "z\u2028".encode(), b"q\x1c", b"tab\t",
              "é".encode(), b"cr\r", b"\xff"]
    expected = [i for i, t in enumerate(tokens) if not vocab.is_file_safe(t)]
    assert vocab.file_unsafe_positions(pa.array(tokens, pa.binary())) == expected
    assert vocab.file_unsafe_positions(pa.array(tokens[:-1], pa.binary())) == expected[:-1]


def test_shards_are_stable_balanced_and_slice_independent():
    tokens = pa.array([b"", b"a", b"abcdefgh", b"abcdefghi", b"x" * 30] + [b"w%d" % i for i in range(40000)])
    shards = shard_of(tokens, 16)
    assert shards.tolist() == shard_of(tokens, 16).tolist()
    assert shard_of(tokens.slice(2, 3), 16).tolist() == shards[2:5].tolist()
    sizes = np.bincount(shards[5:], minlength=16)
    assert sizes.min() > 0.9 * 2500 and sizes.max() < 1.1 * 2500


def test_encode_lines_is_encode_token_per_line():
    for values in (pa.array([b"a", b"", "é".encode(), b"x y"], pa.binary()).slice(1),
                   pa.array([0, -5, 2**62, 7], pa.int64()), pa.array([], pa.binary()),
                   pa.chunked_array([pa.array([b"p"]), pa.array([b"q"])])):
        expected = b"".join(vocab.encode_token(v) + b"\n" for v in values.to_pylist())
        assert vocab.encode_lines(values) == expected


@pytest.mark.parametrize("token_type", [pa.binary(), pa.int64()])
def test_the_three_forms_of_the_ranking_rule_agree(token_type):
    """`rank_table` (Arrow), `rank_key` (Python) and `ranks_at_or_above` are one order:
    count desc then token desc, raw bytes (trailing NULs and non-ASCII included)."""
    rng = random.Random(7)
    if token_type == pa.int64():
        tokens = list({rng.randint(-50, 50) for _ in range(80)})
    else:
        tokens = list({bytes(rng.choice(b"ab\x00\xc3\xa9") for _ in range(rng.randint(0, 3))) for _ in range(80)})
    counts = [rng.randint(1, 4) for _ in tokens]
    table = pa.table({"token": pa.array(tokens, token_type), "count": pa.array(counts, pa.int64())})
    ranked = vocab.rank_table(table)
    expected = sorted(zip(counts, tokens), key=lambda ct: vocab.rank_key(*ct), reverse=True)
    assert list(zip(ranked["count"].to_pylist(), ranked["token"].to_pylist())) == expected
    for count, token in expected[::7]:
        at_or_above = sum(vocab.rank_key(c, t) >= vocab.rank_key(count, token) for c, t in expected)
        assert vocab.ranks_at_or_above(ranked, count, token) == at_or_above


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: bytes(c % 4 * 85 for c in b)), max_size=60), st.data())
def test_fuzz_the_word_sort_orders_bytes_as_arrow_does(values, data):
    """`vocab.bytes_descending_order` (8-byte words, NumPy sorts) against Arrow's stable
    descending sort: duplicates in their original order, zero bytes, values that extend
    one another, long shared prefixes, slices of an array, binary and string arrays."""
    values = values + data.draw(st.lists(st.sampled_from(values), max_size=10)) if values else values
    array = pa.array(values, pa.binary())
    if all(max(v, default=0) < 128 for v in values):
        array = array.cast(pa.string())
    start = data.draw(st.integers(0, len(values)))
    array = array.slice(start, data.draw(st.integers(0, len(values) - start)))
    expected = pc.array_sort_indices(array, order="descending").to_numpy()
    assert vocab.bytes_descending_order(array).tolist() == expected.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab\u00e9\u20ac" + vocab.LINE_BREAKS)), max_size=4), max_size=30),
       st.data())
def test_fuzz_file_unsafe_positions_agree_with_is_file_safe(tokens, data):
    """The byte scan that spares the regex when no byte can end a line break, on slices."""
    array = pa.array([t.encode("utf-8") for t in tokens], pa.binary())
    start = data.draw(st.integers(0, len(tokens)))
    stop = data.draw(st.integers(start, len(tokens)))
    expected = [i for i, t in enumerate(tokens[start:stop]) if not vocab.is_file_safe(t.encode("utf-8"))]
    assert vocab.file_unsafe_positions(array.slice(start, stop - start)) == expected


def test_the_line_break_byte_ranges_are_the_last_bytes_of_the_line_breaks():
    last_bytes = {c.encode("utf-8")[-1] for c in vocab.LINE_BREAKS}
    assert {b for low, high in vocab._LINE_BREAK_BYTE_RANGES for b in range(low, high + 1)} == last_bytes
