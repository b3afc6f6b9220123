"""Parity: a layer built from prepro's artifacts equals the same layer after adapt().

Each test runs the real Beam job on real files and a real Keras adapt() on the same
data, then compares get_vocabulary(), vocabulary_size() and outputs on probe inputs
that include unseen values. docs/keras-parity rules exercised are named per test.
"""

import random

import numpy as np
import pytest

from conftest import adapted_layer, assert_same_layer, run_job, write_jsonl

ODYSSEY = [
    "ξεῖν᾽, ἦ τοι μὲν ὄνειροι ἀμήχανοι ἀκριτόμυθοι",
    "γίγνοντ᾽, οὐδέ τι πάντα τελείεται ἀνθρώποισι.",
    "δοιαὶ γάρ τε πύλαι ἀμενηνῶν εἰσὶν ὀνείρων:",
    "αἱ μὲν γὰρ κεράεσσι τετεύχαται, αἱ δ᾽ ἐλέφαντι:",
    "τῶν οἳ μέν κ᾽ ἔλθωσι διὰ πριστοῦ ἐλέφαντος,",
    "οἵ ῥ᾽ ἐλεφαίρονται, ἔπε᾽ ἀκράαντα φέροντες:",
    "οἱ δὲ διὰ ξεστῶν κεράων ἔλθωσι θύραζε,",
    "οἵ ῥ᾽ ἔτυμα κραίνουσι, βροτῶν ὅτε κέν τις ἴδηται.",
]
DICKINSON = [
    "The Brain is wider than the Sky",
    "For put them side by side",
    "The one the other will contain",
    "With ease and You beside",
]
DICKINSON_PROBE = ["The Brain is deeper than the sea", "for if they are held Blue to Blue",
                   "The one the other will absorb"]
# Rules 10-13: non-ASCII upper case, NBSP / U+2003 / \x1c / \x85 are not separators,
# combining marks, emoji, non-ASCII punctuation kept, ASCII punctuation stripped.
UNICODE = [
    "ÉCOLE école École naïve nai\u0308ve",
    "a\u00a0b a\u2003b c\x1cd e\x85f   tab\there\nnewline\rcr\x0bvt\x0cff",
    "emoji 😀😀 👍🏽 flags 🇫🇷 — “quotes” «guillemets» ¿qué? ¡sí!",
    "Straße STRASSE ǅ ǈ İstanbul ΣΊΣΥΦΟΣ",
    "don't stop-me now... (really) [yes] {no} <tag> a_b a+b=c 100% $5 #1 @me ~ ` ^ | \\ /",
    "",
    "   ",
    "Ünïcödé ünïcödé ÜNÏCÖDÉ 😀",
]


def _text_job(tmp_path, docs, configs):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in docs])
    features = {name: {"source": "text", "layer": "TextVectorization", "config": cfg}
                for name, cfg in configs.items()}
    return run_job(tmp_path, features, [path], "jsonl")


def _check_text(arts, docs, configs, probe):
    for name, cfg in configs.items():
        reference = adapted_layer("TextVectorization", _keras_config(cfg), docs)
        assert_same_layer(arts.layer(name), reference, np.array(probe, dtype=object))


def _keras_config(cfg):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


TEXT_CONFIGS = {
    "default": {},
    "multi_hot": {"output_mode": "multi_hot"},
    "count": {"output_mode": "count"},
    "seq8": {"output_sequence_length": 8},
    "small": {"max_tokens": 7},
    "lower": {"standardize": "lower", "max_tokens": 12, "output_mode": "count"},
    "strip": {"standardize": "strip_punctuation"},
    "raw": {"standardize": None},
    "chars": {"split": "character", "output_mode": "count"},
    "whole": {"split": None, "standardize": None},
    "bigrams": {"ngrams": 2, "output_mode": "multi_hot"},
    "tri13": {"ngrams": [1, 3], "max_tokens": 30},
}


def test_odyssey_lines_every_text_option(tmp_path):
    arts = _text_job(tmp_path, ODYSSEY, TEXT_CONFIGS)
    _check_text(arts, ODYSSEY, TEXT_CONFIGS, ODYSSEY + ["ὄνειροι ἄγνωστοι, μὲν μὲν"])


def test_dickinson_guide_examples(tmp_path):
    configs = {"int": {"output_mode": "int"}, "bigram_multi_hot": {"output_mode": "multi_hot", "ngrams": 2},
               "count": {"output_mode": "count", "max_tokens": 10}}
    arts = _text_job(tmp_path, DICKINSON, configs)
    _check_text(arts, DICKINSON, configs, DICKINSON_PROBE)


def test_unicode_corpus(tmp_path):
    arts = _text_job(tmp_path, UNICODE, TEXT_CONFIGS)
    _check_text(arts, UNICODE, TEXT_CONFIGS, UNICODE + ["école ÉCOLE 😀 a\u00a0b"])


def _generated_corpus(seed=3, docs=400, words=150):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(words)] + ["Zeta", "zeta", "zéta", "Ωmega", "ab", "a", "b"]
    # Few distinct counts: many ties, ranked by token descending (rule 3).
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 6))) for _ in range(docs)]


def test_generated_corpus_with_ties_cut_inside_a_tie(tmp_path):
    docs = _generated_corpus()
    configs = {f"max{m}": {"max_tokens": m} for m in (5, 20, 77)}
    configs.update({"bi": {"ngrams": 2, "max_tokens": 100, "output_mode": "count"}, "all": {}})
    arts = _text_job(tmp_path, docs, configs)
    _check_text(arts, docs, configs, docs[:50] + ["w1 w2 unseen zeta Zeta"])
    counts = arts.figures("max20")
    assert counts["tokens_kept"] == 18 and counts["distinct_tokens"] > 100


def test_callable_standardize_and_split(tmp_path):
    import tensorflow as tf

    def standardize(x):
        return tf.strings.regex_replace(tf.strings.lower(x), "[0-9]", "#")

    def split(x):
        return tf.strings.split(x, sep="-")

    docs = ["A1-b2-C3", "a1-B22", "x-y-z-x", "", "Q-q"]
    configs = {"std": {"standardize": standardize}, "spl": {"split": split, "standardize": None},
               "both": {"standardize": standardize, "split": split, "ngrams": 2}}
    path = write_jsonl(tmp_path / "d.jsonl", [{"t": d} for d in docs])
    features = {n: {"source": "t", "layer": "TextVectorization", "config": c} for n, c in configs.items()}
    from prepro.spec import callable_name
    custom = {callable_name(standardize): standardize, callable_name(split): split}
    import prepro
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    run_analyze(spec_from_dict({"features": features}), [path], "jsonl", str(tmp_path / "a"))
    arts = prepro.load(str(tmp_path / "a"), custom_objects=custom)
    probe = np.array(docs + ["a1-zz"], dtype=object)
    for name, cfg in configs.items():
        assert_same_layer(arts.layer(name), adapted_layer("TextVectorization", cfg, docs), probe)


# --- StringLookup and IntegerLookup: rules 1-8 -------------------------------------------

LOOKUP_CONFIGS = {
    "plain": {},
    "cut": {"max_tokens": 6},
    "oov0": {"num_oov_indices": 0, "max_tokens": 9},
    "oov3": {"num_oov_indices": 3},
    "mask_int": {"max_tokens": 8},
    "one_hot": {"output_mode": "one_hot"},
    "multi_hot": {"output_mode": "multi_hot", "max_tokens": 7},
    "count": {"output_mode": "count", "num_oov_indices": 2},
}


def _lookup_configs(mask, oov):
    configs = {k: dict(v) for k, v in LOOKUP_CONFIGS.items()}
    configs["mask_int"]["mask_token"] = mask
    configs["multi_hot"]["mask_token"] = mask
    configs["oov_custom"] = {"oov_token": oov}
    return configs


def _check_lookup(arts, layer, configs, data, probe_in_vocab, probe_any):
    for name, cfg in configs.items():
        reference = adapted_layer(layer, cfg, data)
        built = arts.layer(name)
        probe = probe_in_vocab if cfg.get("num_oov_indices", 1) == 0 else probe_any
        if cfg.get("output_mode") == "one_hot":
            probe = probe.reshape(-1)
        assert_same_layer(built, reference, probe)


def test_string_lookup_guide_and_ties(tmp_path):
    rng = random.Random(5)
    values = ["a", "b", "c", "b", "c", "a"] + [rng.choice("abcdefghijklmnop") + rng.choice("xy") for _ in range(300)]
    values += ["[UNK]", "MASK", "MASK", "é", "É", "😀", ""]  # special tokens are removed from counts (rule 2)
    configs = _lookup_configs("MASK", "[OOV]")
    path = write_jsonl(tmp_path / "v.jsonl", [{"v": v} for v in values])
    arts = run_job(tmp_path, {n: {"source": "v", "layer": "StringLookup", "config": c}
                              for n, c in configs.items()}, [path], "jsonl")
    top = arts.vocabulary("plain")[:5]
    probe_any = np.array([["a", "zz", ""], ["MASK", "[UNK]", "é"], ["bx", "d", "never"]], dtype=object)
    cut = adapted_layer("StringLookup", configs["oov0"], values).get_vocabulary()
    probe_in = np.array([cut[:3], cut[3:6]], dtype=object)
    _check_lookup(arts, "StringLookup", configs, values, probe_in, probe_any)
    assert len(top) == 5


def test_integer_lookup_guide_and_ties(tmp_path):
    rng = random.Random(9)
    values = [10, 20, 20, 10, 30, 0] + [rng.randint(-20, 40) for _ in range(400)] + [-1, -1, 7]
    configs = _lookup_configs(0, -7)
    path = write_jsonl(tmp_path / "v.jsonl", [{"v": v} for v in values])
    arts = run_job(tmp_path, {n: {"source": "v", "layer": "IntegerLookup", "config": c}
                              for n, c in configs.items()}, [path], "jsonl")
    probe_any = np.array([[10, 50, 0], [-1, 60, -7], [39, 1000, -20]], dtype=np.int64)
    cut = adapted_layer("IntegerLookup", configs["oov0"], values).get_vocabulary()
    probe_in = np.array([cut[:3], cut[3:6]], dtype=np.int64)
    _check_lookup(arts, "IntegerLookup", configs, values, probe_in, probe_any)


def test_tokens_a_vocabulary_file_cannot_hold(tmp_path):
    """Empty, newline, trailing \\r and splitlines() separators: exact via the exception list."""
    values = ["", "", "", "a\nb", "a\nb", "x\r", "x\r", "tab\there", "\x85", "\u2028", "\x1c", "ok", "ok\r\n", "ok"]
    path = write_jsonl(tmp_path / "v.jsonl", [{"v": v} for v in values])
    arts = run_job(tmp_path, {"v": {"source": "v", "layer": "StringLookup"},
                              "m": {"source": "v", "layer": "StringLookup", "config": {"output_mode": "count"}}},
                   [path], "jsonl")
    assert arts.manifest["features"]["v"]["state"]["exceptions"], "expected non-file tokens"
    probe = np.array([values[:7], values[7:]], dtype=object)
    assert_same_layer(arts.layer("v"), adapted_layer("StringLookup", {}, values), probe)
    assert_same_layer(arts.layer("m"), adapted_layer("StringLookup", {"output_mode": "count"}, values), probe)


@pytest.mark.parametrize("policy", ["replace", "skip"])
def test_invalid_utf8_policies_match_adapt_on_the_cleaned_data(tmp_path, policy):
    lines = [b"caf\xc3\xa9 ok", b"bad \xff\xfe bytes", b"trunc \xe2\x82", b"fine line", b"bad \xff again"]
    (tmp_path / "d.txt").write_bytes(b"\n".join(lines) + b"\n")
    arts = run_job(tmp_path, {"t": {"source": "text", "layer": "TextVectorization", "invalid_utf8": policy},
                              "c": {"source": "text", "layer": "TextVectorization", "invalid_utf8": policy,
                                    "config": {"split": "character", "output_mode": "count"}}},
                   [str(tmp_path / "d.txt")], "text")
    decoded = [b.decode("utf-8", "replace") for b in lines]
    cleaned = decoded if policy == "replace" else [d for d, b in zip(decoded, lines) if d.encode() == b]
    figures = arts.figures("t")
    assert figures[f"invalid_utf8_{'replaced' if policy == 'replace' else 'skipped'}"] == 3
    probe = np.array(decoded, dtype=object)
    assert_same_layer(arts.layer("t"), adapted_layer("TextVectorization", {}, cleaned), probe)
    assert_same_layer(arts.layer("c"), adapted_layer("TextVectorization", {"split": "character",
                                                                          "output_mode": "count"}, cleaned), probe)
