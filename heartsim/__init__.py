"""heartsim: virtual persons whose hearts respond to stress, streamed to machine-learning models.

The public API, re-exported here:

- :func:`sample_population`, :class:`PersonProfile`: who is simulated;
- :class:`Engine`: the live, step-by-step simulation;
- :func:`simulate`, :func:`load`: batch datasets as pandas tables;
- :mod:`heartsim.hrv`: heart-rate-variability measures;
- :class:`HeartsimServer`, :func:`create_app`: the streaming API server;
- :class:`Client`: async and sync client of a running server.
"""

from heartsim import hrv
from heartsim._version import __version__
from heartsim.api import create_app
from heartsim.client import Client, HeartsimError
from heartsim.datasets import SimulationResult, load, simulate
from heartsim.engine import Engine, SimulationState
from heartsim.physiology import LABELS, Episode, PersonProfile, sample_population
from heartsim.protocols import CustomProtocol, LabProtocol, Protocol, RestProtocol
from heartsim.server import HeartsimServer

__all__ = [
    "LABELS",
    "Client",
    "CustomProtocol",
    "Engine",
    "Episode",
    "HeartsimError",
    "HeartsimServer",
    "LabProtocol",
    "PersonProfile",
    "Protocol",
    "RestProtocol",
    "SimulationResult",
    "SimulationState",
    "__version__",
    "create_app",
    "hrv",
    "load",
    "sample_population",
    "simulate",
]
