"""The column names of heartsim 0.1, readable until 0.3 (then this module goes).

heartsim 0.2 gave every column of :attr:`heartsim.SimulationResult.samples` and
:attr:`~heartsim.SimulationResult.beats` its unit (see :mod:`heartsim.datasets`). The tables are
:class:`pandas.DataFrame` subclasses whose ``table[old]``, ``table[[old, ...]]`` and ``table.old``
read the renamed column with a :class:`FutureWarning`; every derived table (filtered, sorted,
grouped) is one too. Other pandas calls (``query``, ``loc``, ``set_index``, ``groupby("bpm")``,
``groupby(...).bpm``) need the new names.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import pandas as pd

#: Old ``samples`` column -> new one (the old ones are the message fields, which stay).
OLD_SAMPLE_COLUMNS: Final[dict[str, str]] = {
    "t": "t_s",
    "bpm": "hr_bpm",
    "variability": "rmssd_ms",
    "systolic": "systolic_mmhg",
    "diastolic": "diastolic_mmhg",
    "respiration_rate": "breathing_rate_bpm",
}
#: Old ``beats`` column -> new one.
OLD_BEAT_COLUMNS: Final[dict[str, str]] = {"respiration_rate": "breathing_rate_bpm"}


class _RenamedColumns(pd.DataFrame):
    """A table whose columns were renamed: ``table[old]`` and ``table.old`` still read the
    new column, with a :class:`FutureWarning`, until heartsim 0.3."""

    _renamed: ClassVar[Mapping[str, str]] = {}
    _table: ClassVar[str] = ""

    @property
    def _constructor(self) -> type[_RenamedColumns]:
        return type(self)

    def _current_name(self, name: str) -> str:
        new = type(self)._renamed[name]
        warnings.warn(
            f"the {self._table} column {name!r} is now {new!r} (heartsim 0.2 names carry their "
            f"units); the old name stops working in heartsim 0.3",
            FutureWarning,
            stacklevel=3,
        )
        return new

    def __getitem__(self, key: Any) -> Any:
        renamed = type(self)._renamed
        if isinstance(key, str):
            if key in renamed and key not in self.columns:
                key = self._current_name(key)
        elif isinstance(key, list) and any(isinstance(k, str) and k in renamed for k in key):
            columns, names = self.columns, []
            for k in key:  # a loop, not a comprehension: the warning's stacklevel
                old = isinstance(k, str) and k in renamed and k not in columns
                names.append(self._current_name(k) if old else k)
            key = names
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._renamed and name not in self.columns:
            return super().__getitem__(self._current_name(name))
        return super().__getattr__(name)


class BeatsTable(_RenamedColumns):
    _renamed = OLD_BEAT_COLUMNS
    _table = "beats"


class SamplesTable(_RenamedColumns):
    _renamed = OLD_SAMPLE_COLUMNS
    _table = "samples"
