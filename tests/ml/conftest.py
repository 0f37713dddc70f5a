"""Shared small populations and a fitted model for the heartsim.ml tests."""

from __future__ import annotations

import pandas as pd
import pytest

from heartsim import SimulationResult, simulate
from heartsim.ml import StressClassifier, make_dataset


@pytest.fixture(scope="session")
def small_run() -> SimulationResult:
    """Three persons, 15 min of the lab protocol: beats, samples and episodes."""
    return simulate(n_persons=3, duration_s=900, seed=21)


@pytest.fixture(scope="session")
def train_data() -> pd.DataFrame:
    """A modest training table: 8 persons, 30 min each."""
    return make_dataset(n_persons=8, seed=5, duration_s=1800)


@pytest.fixture(scope="session")
def fitted_model(train_data: pd.DataFrame) -> StressClassifier:
    return StressClassifier().fit(train_data, train_data["stressed"])
