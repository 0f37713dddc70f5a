"""heartsim: virtual persons whose hearts respond to stress, streamed to machine-learning models.

The public API, re-exported here:

- :func:`sample_population`, :class:`PersonProfile`: who is simulated;
- :class:`Engine`: the live, step-by-step simulation;
- :func:`simulate`, :func:`load`: batch datasets as pandas tables;
- :mod:`heartsim.hrv`: heart-rate-variability measures;
- :class:`HeartsimServer`, :func:`create_app`: the streaming API server;
- :class:`Client`: async and sync client of a running server;
- :func:`start_server`, :func:`stop_server`: the server inside a Jupyter kernel (or a script);
- :func:`controls`, :func:`live_plot`: ipywidgets panel and live matplotlib plot (imported on
  first use: ipywidgets and matplotlib are slow to import);
- :mod:`heartsim.ml`: features, classifier, evaluation (``import heartsim.ml``).
"""

from typing import Any

from heartsim import hrv
from heartsim._version import __version__
from heartsim.api import create_app
from heartsim.client import Client, HeartsimError
from heartsim.datasets import SimulationResult, load, simulate
from heartsim.engine import Engine, SimulationState
from heartsim.notebook import ServerHandle, start_server, stop_server
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
    "ServerHandle",
    "SimulationResult",
    "SimulationState",
    "__version__",
    "controls",
    "create_app",
    "hrv",
    "live_plot",
    "load",
    "sample_population",
    "simulate",
    "start_server",
    "stop_server",
]

_LAZY_WIDGETS = frozenset({"controls", "live_plot", "ControlPanel", "LivePlot"})


def __getattr__(name: str) -> Any:
    """Import the widgets (ipywidgets, matplotlib) only when first asked for."""
    if name in _LAZY_WIDGETS:
        from heartsim import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'heartsim' has no attribute {name!r}")
