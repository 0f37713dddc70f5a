"""heartsim: virtual persons whose hearts respond to stress, streamed to machine-learning models.

The public API, re-exported here:

- :func:`sample_population`, :class:`PersonProfile`: who is simulated;
- :class:`Engine`: the live, step-by-step simulation;
- :func:`simulate`, :func:`load`: batch datasets as pandas tables;
- :mod:`heartsim.hrv`: heart-rate-variability measures;
- :class:`HeartsimServer`, :func:`create_app`: the streaming API server;
- :class:`Client`: async and sync client of a running server;
- :func:`start_server`, :func:`stop_server`: the server inside a Jupyter kernel (or a script);
- :func:`controls`, :func:`live_plot`, :func:`prediction_badge`: ipywidgets panel, live
  matplotlib plot and the attached model's live prediction;
- :mod:`heartsim.ml`: features, classifier, evaluation (``import heartsim.ml``).

The server, client, HRV and widget names are imported on first use, so ``import heartsim`` for
simulation stays quick.
"""

import importlib
from typing import TYPE_CHECKING, Any

from heartsim._version import __version__
from heartsim.datasets import SimulationResult, load, simulate
from heartsim.engine import Engine, SimulationState
from heartsim.physiology import LABELS, Episode, PersonProfile, sample_population
from heartsim.protocols import CustomProtocol, LabProtocol, Protocol, RestProtocol

if TYPE_CHECKING:
    from heartsim import hrv
    from heartsim.api import create_app
    from heartsim.client import Client, HeartsimError
    from heartsim.notebook import ServerHandle, start_server, stop_server
    from heartsim.server import HeartsimServer
    from heartsim.widgets import (
        ControlPanel,
        LivePlot,
        PredictionBadge,
        controls,
        live_plot,
        prediction_badge,
    )

__all__ = [
    "LABELS",
    "Client",
    "ControlPanel",
    "CustomProtocol",
    "Engine",
    "Episode",
    "HeartsimError",
    "HeartsimServer",
    "LabProtocol",
    "LivePlot",
    "PersonProfile",
    "PredictionBadge",
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
    "prediction_badge",
    "sample_population",
    "simulate",
    "start_server",
    "stop_server",
]

# Imported on first use: the server stack (FastAPI, httpx, websockets), SciPy (hrv) and the
# widgets (ipywidgets, matplotlib) take over a second to import, and simulating needs none.
_LAZY = {
    "hrv": "heartsim.hrv",
    "create_app": "heartsim.api",
    "Client": "heartsim.client",
    "HeartsimError": "heartsim.client",
    "ServerHandle": "heartsim.notebook",
    "start_server": "heartsim.notebook",
    "stop_server": "heartsim.notebook",
    "HeartsimServer": "heartsim.server",
    "controls": "heartsim.widgets",
    "live_plot": "heartsim.widgets",
    "ControlPanel": "heartsim.widgets",
    "LivePlot": "heartsim.widgets",
    "prediction_badge": "heartsim.widgets",
    "PredictionBadge": "heartsim.widgets",
}


def __getattr__(name: str) -> Any:
    """Import the lazily exported names (see ``_LAZY``) when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'heartsim' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"heartsim.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
