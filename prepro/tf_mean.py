"""TensorFlow's float32 mean of a vector on CPU (`tf.reduce_mean`), reproduced bit for bit
with NumPy, so that golden rows need no TensorFlow for the OOV slot's weight of a tf_idf
feature: adapt() sets it to `tf.reduce_mean` of the learned weights (keras-parity rule
18), which `prepro.layers` reproduces with TensorFlow itself when it builds a layer.

Why written here: NumPy sums in another order (pairwise over blocks of 128), and a
float32 sum's last bits depend on the order. TensorFlow's CPU kernel (reduction_ops.h:
a mean is Eigen's SumReducer divided by the count, in float32) sums a short vector in one
thread with Eigen's InnerMostDimReducer (TensorReduction.h):
- a range longer than 1024 packets is split at the first packet boundary at or past
  its middle; the halves' sums are added to 0, left then right;
- a shorter range (a leaf): while 4 whole packets remain they go to 4 packet
  accumulators, which are then folded into the first ((p0 + p1) + p2) + p3; the whole
  packets left go to p0, one by one; the last scalars are added one by one to 0; the
  leaf's sum is that scalar sum + the lanes of p0 halved down (low half + high half).

A packet is 8 float32 lanes: Eigen's AVX packet, which TensorFlow's x86-64 wheels are
built with. Other builds (NEON: 4 lanes; a custom AVX-512 build: 16) add in another
order. And from ~108,000 values on, Eigen's cost model gives the sum several threads,
one block each, as many as the machine has cores (measured here on 2 cores: vectors of
108,389 values and more are summed as 2 blocks, unless TensorFlow has 1 intra-op thread).
So `reproducible` holds on x86-64 for 1 to 2^16 values, which one thread sums whatever
the core count. TensorFlow's threads also run with denormals flushed (DAZ and FTZ: a
subnormal input counts as zero, a subnormal result of an addition or of the division
becomes zero), so every step here flushes them too. tests/test_tf_mean.py compares with
`tf.reduce_mean` on vectors of every length that changes the order.
"""

import platform

import numpy as np

LANES = 8  # float32 lanes of an AVX packet
LEAF = 1024 * LANES  # Eigen's LeafSize (1024) in packets
MAX_VALUES = 1 << 16  # one thread sums them whatever the core count (the module docstring)


def reproducible(count: int) -> bool:
    """Whether `mean` gives TensorFlow's bits for `count` values on this machine."""
    return 0 < count <= MAX_VALUES and platform.machine().lower() in ("x86_64", "amd64")


def mean(values: np.ndarray) -> np.float32:
    """`tf.reduce_mean(tf.constant(values, tf.float32))` of a 1-D vector, the same bits
    where `reproducible(len(values))`."""
    values = _flushed(np.ascontiguousarray(values, np.float32).reshape(-1))
    if not len(values):
        raise ValueError("the mean of no values")
    return _flushed(np.float32(_sum(values, 0, len(values)) / np.float32(len(values))))


def _flushed(x):
    """Subnormal float32 values as zeros of their sign (DAZ on inputs, FTZ on results)."""
    x = np.asarray(x, np.float32)
    return np.where(np.abs(x) < np.finfo(np.float32).tiny, np.copysign(np.float32(0), x), x).astype(np.float32)


def _sum(values: np.ndarray, first: int, count: int) -> np.float32:
    if count <= LEAF:
        return _leaf(values[first:first + count])
    split = LANES * -(-(first + -(-count // 2)) // LANES)  # ceil, as Eigen's div_ceil
    left = min(split - first, count)
    total = _flushed(np.float32(0) + _sum(values, first, left))
    if left < count:
        total = _flushed(total + _sum(values, split, count - left))
    return total


def _leaf(values: np.ndarray) -> np.float32:
    count = len(values)
    packet, start = np.zeros(LANES, np.float32), 0
    if count >= 4 * LANES:
        start = count // (4 * LANES) * (4 * LANES)
        p = np.zeros((4, LANES), np.float32)
        for row in values[:start].reshape(-1, 4, LANES):  # strictly one row after another
            p = _flushed(p + row)
        packet = _flushed(_flushed(_flushed(p[0] + p[1]) + p[2]) + p[3])
    whole = count // LANES * LANES
    for row in values[start:whole].reshape(-1, LANES):
        packet = _flushed(packet + row)
    scalars = np.float32(0)
    for value in values[whole:]:
        scalars = _flushed(scalars + value)
    while len(packet) > 1:
        packet = _flushed(packet[:len(packet) // 2] + packet[len(packet) // 2:])
    return _flushed(scalars + packet[0])
