"""Row figures (counters) that merge by addition, field by field."""

import dataclasses


@dataclasses.dataclass
class Figures:
    """Base for dataclasses of integer counters.

    Example:
    >>> @dataclasses.dataclass
    ... class Seen(Figures):
    ...     rows: int = 0
    >>> Seen(2).merge(Seen(3))
    Seen(rows=5)
    """

    def merge(self, other):
        return type(self)(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))
