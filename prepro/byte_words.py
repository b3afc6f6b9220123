"""Binary Arrow values read as 8-byte words, one vector gather per row.

Written here because Arrow has no kernel that hands out a value's bytes as integers,
and a Python call (or a loop over the bytes) per value costs ~30x more. The values'
bytes are copied once between 8 zero bytes either side; element i of an unaligned
uint64 view of that copy is the word starting at byte i. Three users: `shard_of`'s
stable hash, the golden rows' candidate keys, and the ranking's byte sort (big-endian
words compare as the bytes do).
"""

import numpy as np

_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)


class ByteWords:
    """The 8-byte words of a binary, string or large variant Arrow array (no nulls):
    `word(positions)` reads the words at byte positions numbered like `starts` (value
    j's first byte) and `lengths` (its length)."""

    def __init__(self, values, byteorder: str = "<"):
        import pyarrow as pa
        large = pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type)
        offsets = np.frombuffer(values.buffers()[1], np.int64 if large else np.int32)[
            values.offset:values.offset + len(values) + 1].astype(np.int64) if len(values) else np.zeros(1, np.int64)
        data = values.buffers()[2]
        first, last = (int(offsets[0]), int(offsets[-1])) if len(values) else (0, 0)
        padded = np.zeros(last - first + 16, np.uint8)
        if data is not None and last > first:
            padded[8:8 + last - first] = np.frombuffer(data, np.uint8)[first:last]
        self._at = np.ndarray((len(padded) - 7,), np.dtype(byteorder + "u8"), padded, 0, (1,))
        self.starts: np.ndarray = offsets[:-1] - first + 8
        self.lengths: np.ndarray = np.diff(offsets)

    def word(self, positions: np.ndarray) -> np.ndarray:
        """The words (native uint64) starting at `positions`; one past the padding reads
        the last word (callers mask out whatever lies beyond a value)."""
        return self._at[np.minimum(positions, len(self._at) - 1)].astype(np.uint64)


def low_bytes(n) -> np.ndarray:
    """Per element, a uint64 mask of its low min(max(n, 0), 8) bytes: a little-endian
    word's first n bytes."""
    return _LOW_BYTES[np.clip(n, 0, 8)]


def high_bytes(n) -> np.ndarray:
    """Per element, a uint64 mask of its high min(max(n, 0), 8) bytes: a little-endian
    word's last n bytes, or a big-endian word's first n."""
    return ~low_bytes(8 - np.clip(n, 0, 8))

