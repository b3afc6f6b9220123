"""A feature's state files: their names, how the job writes each one (with its manifest
entry) and how `prepro.load` reads it back, side by side, as Keras keeps a layer's
`save_assets` next to its `load_assets`. docs/artifact-format.md describes the files.

    <feature>/vocabulary.txt            one token per line, rank order (prepro.vocab)
    <feature>/document_frequencies.txt  one decimal integer per learned token
    <feature>/mean.txt, variance.txt    one float64 per line, row-major over the kept axes
    <feature>/boundaries.txt            one float32-exact float per line, sorted

Readers take bytes that passed their checksum (`artifacts.StateFiles.read`) and still
trust nothing: a malformed file is a ValueError naming what is wrong, which the caller
reports as the artifact's error naming the file.
"""

import math
from typing import Any, Callable, Dict, Iterable, List

import numpy as np

from prepro import artifacts, fs, vocab

VOCABULARY = "vocabulary.txt"
DOCUMENT_FREQUENCIES = "document_frequencies.txt"
MEAN = "mean.txt"
VARIANCE = "variance.txt"
BOUNDARIES = "boundaries.txt"


def relpath(feature: str, file: str) -> str:
    """A state file's path inside the state directory: the feature's folder, the file."""
    return f"{feature}/{file}"


# --------------------------------------------------------------------------- writing

class HashedFile:
    """A file being written, with its manifest entry (size and SHA-256) computed on the way."""

    def __init__(self, out):
        self._out = out
        self._digest = artifacts.Digest()

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self._digest.update(data)

    def file_entry(self) -> Dict[str, Any]:
        return self._digest.entry()


class StateWriter:
    """Writes one feature's whole state files into `state_dir` and collects their
    manifest entries (`files`). `after_write` runs after each file (the job's failpoints)."""

    def __init__(self, state_dir: str, feature: str, after_write: Callable[[], None] = lambda: None):
        self._state_dir, self._feature, self._after_write = state_dir, feature, after_write
        self.files: Dict[str, Dict[str, Any]] = {}

    def write(self, file: str, data: bytes) -> str:
        path = relpath(self._feature, file)
        fs.write_bytes(fs.join(self._state_dir, path), data)
        self._after_write()
        self.files[path] = artifacts.file_entry(data)
        return path

    def open(self, file: str):
        """(relpath, a writable stream) for a file written in pieces; enter the stream."""
        path = relpath(self._feature, file)
        return path, fs.open_write(fs.join(self._state_dir, path))


def float_lines(values: Iterable[float]) -> bytes:
    """Python's shortest round-trip repr of each value, one per line: exact float64."""
    return "".join(f"{float(v)!r}\n" for v in values).encode("ascii")


# --------------------------------------------------------------------------- reading

def read_floats(data: bytes, expected: int, field: str) -> np.ndarray:
    values = np.array(data.split(), np.float64)
    require_count(values, expected, "values", field)
    return values


def read_boundaries(data: bytes, expected: int) -> List[float]:
    boundaries = [float(v) for v in data.split()]
    require_count(boundaries, expected, "boundaries", "num_boundaries")
    if any(math.isnan(b) for b in boundaries) or boundaries != sorted(boundaries):
        raise ValueError("boundaries must be sorted numbers")
    return boundaries


def read_document_frequencies(data: bytes, expected: int) -> np.ndarray:
    frequencies = np.array(data.split(), dtype=np.int64)
    require_count(frequencies, expected, "frequencies", "vocabulary_size")
    if (frequencies < 0).any():
        raise ValueError("negative document frequency")
    return frequencies


def read_vocabulary(data: bytes, integer: bool, exceptions: Iterable, expected: int) -> List[Any]:
    """The learned tokens in rank order: the file's lines with the manifest's exceptions
    put back at their ranks (see prepro.vocab)."""
    tokens = vocab.read_vocabulary_file(data, integer)
    tokens = vocab.merge_exceptions(tokens, [(rank, vocab.token_from_json(t)) for rank, t in exceptions])
    require_count(tokens, expected, "tokens (exceptions included)", "vocabulary_size")
    return tokens


def require_count(values, expected: int, what: str, field: str) -> None:
    if len(values) != expected:
        raise ValueError(f"{len(values)} {what}, but the manifest's {field} says {expected}")
