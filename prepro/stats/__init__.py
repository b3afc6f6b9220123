"""Plain mergeable statistics. `merge` is associative and commutative and the results
are canonical, so bundles, workers, runners and input order cannot change a byte."""

from prepro.stats.counts import TokenCounts, shard_of
from prepro.stats.figures import Figures

__all__ = ["Figures", "TokenCounts", "shard_of"]
