"""heartsim: virtual persons whose hearts respond to stress, streamed to machine-learning models.

The public API, re-exported here:

- :func:`sample_population`, :class:`PersonProfile`: who is simulated;
- :class:`Engine`: the live, step-by-step simulation;
- :func:`simulate`, :func:`load`: batch datasets as pandas tables;
- :mod:`heartsim.hrv`: heart-rate-variability measures.
"""

from heartsim import hrv
from heartsim.datasets import SimulationResult, load, simulate
from heartsim.engine import Engine, SimulationState
from heartsim.physiology import LABELS, Episode, PersonProfile, sample_population
from heartsim.protocols import CustomProtocol, LabProtocol, Protocol, RestProtocol

__version__ = "0.1.0"

__all__ = [
    "LABELS",
    "CustomProtocol",
    "Engine",
    "Episode",
    "LabProtocol",
    "PersonProfile",
    "Protocol",
    "RestProtocol",
    "SimulationResult",
    "SimulationState",
    "__version__",
    "hrv",
    "load",
    "sample_population",
    "simulate",
]
