"""Which friends engaged with which items of a ranked list, held as arrays: the list cache
stores them as arrays (app.serving.ranked), and a request reads only its k items' share,
so nothing is rebuilt per list position."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_NONE = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Engagements:
    """Engagement j: friend `names[who[j]]` engaged with the item at list position
    `where[j]`; `where` ascending, and a position's friends in friend order."""

    names: Sequence[str]
    where: np.ndarray  # int64
    who: np.ndarray  # int64

    @classmethod
    def none(cls) -> Engagements:
        return cls((), _NONE, _NONE)

    @classmethod
    def of(cls, by_position: Mapping[int, Sequence[str]]) -> Engagements:
        """From position → the friends who engaged, in friend order."""
        names = sorted({f for fs in by_position.values() for f in fs})
        number = {f: n for n, f in enumerate(names)}
        pairs = [(p, number[f]) for p, fs in sorted(by_position.items()) for f in fs]
        return cls(names, np.asarray([p for p, _ in pairs], dtype=np.int64),
                   np.asarray([w for _, w in pairs], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.where)

    def at(self, positions: np.ndarray) -> list[tuple[str, ...]]:
        """The friends who engaged with the item at each of `positions`."""
        if not len(self.where):
            return [()] * len(positions)
        lo = np.searchsorted(self.where, positions, "left").tolist()
        hi = np.searchsorted(self.where, positions, "right").tolist()
        names, who = self.names, self.who.tolist()
        return [tuple([names[w] for w in who[a:b]]) if b > a else ()
                for a, b in zip(lo, hi, strict=True)]

    def as_dict(self) -> dict[int, tuple[str, ...]]:
        """Position → the friends who engaged (positions without any left out)."""
        positions = np.unique(self.where)
        return dict(zip(positions.tolist(), self.at(positions), strict=True))

    def compact(self) -> Engagements:
        """The same engagements naming only the friends who engaged (for storing)."""
        used, who = np.unique(self.who, return_inverse=True)
        return Engagements([self.names[n] for n in used.tolist()], self.where,
                           who.astype(np.int64))
