import subprocess
import sys

import pandas as pd

from heartsim.cli import parse_duration


def heartsim(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "heartsim.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def test_simulate_prints_a_summary_and_writes_the_dataset(tmp_path):
    out = tmp_path / "data"
    done = heartsim(
        "simulate", "--persons", "3", "--duration", "15m", "--seed", "4", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "Simulated 3 persons for 900 s" in done.stdout
    for label in ("rest", "stress"):
        assert label in done.stdout
    beats = pd.read_parquet(out / "beats.parquet")
    assert beats.person_id.nunique() == 3 and beats.t_s.max() <= 900
    assert (out / "samples.parquet").exists()


def test_simulate_csv_and_rest_protocol(tmp_path):
    done = heartsim(
        "simulate", "--persons", "1", "--duration", "60", "--protocol", "rest",
        "--format", "csv", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(pd.read_csv(tmp_path / "beats.csv").label) == {"rest"}


def test_bad_input_exits_2_with_a_message_naming_it(tmp_path):
    done = heartsim("simulate", "--duration", "soon", "--out", str(tmp_path))
    assert done.returncode == 2 and "duration must look like" in done.stderr
    done = heartsim("simulate", "--persons", "0", "--out", str(tmp_path))
    assert done.returncode == 2 and "n_persons must be" in done.stderr


def test_parse_duration_units():
    assert parse_duration("90") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2d") == 172800
