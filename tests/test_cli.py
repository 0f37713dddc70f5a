import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import heartsim
from heartsim.cli import summary_table


def heartsim_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "heartsim.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def test_simulate_prints_a_rounded_summary_and_writes_a_reproducible_dataset(tmp_path):
    out = tmp_path / "data"
    done = heartsim_cli(
        "simulate", "--persons", "3", "--duration", "15m", "--seed", "4", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "Simulated 3 persons for 15m (900 s)" in done.stdout
    for label in ("rest", "stress"):
        assert label in done.stdout
    # Rounded numbers only: no float32 noise such as 70.290001.
    numbers = [w for w in done.stdout.split() if w.replace(".", "", 1).isdigit() and "." in w]
    assert numbers and all(len(n.split(".")[1]) <= 2 for n in numbers), numbers
    beats = pd.read_parquet(out / "beats.parquet")
    assert beats.person_id.nunique() == 3 and beats.t_s.max() <= 900
    meta = json.loads((out / "meta.json").read_text())
    assert meta["heartsim_version"] == heartsim.__version__
    again, back = heartsim.simulate(**meta["parameters"]), heartsim.load(out)
    pd.testing.assert_frame_equal(back.beats, again.beats)
    pd.testing.assert_frame_equal(back.samples, again.samples)


def test_compound_durations_and_csv(tmp_path):
    done = heartsim_cli(
        "simulate", "--persons", "1", "--duration", "1m30s", "--protocol", "rest",
        "--format", "csv", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "for 1m30s (90 s)" in done.stdout
    assert set(pd.read_csv(tmp_path / "beats.csv").label) == {"rest"}


def test_version():
    done = heartsim_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"heartsim {heartsim.__version__}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--persons", "-1"], "--persons: must be an integer between 1 and 1000000, got '-1'"),
        (["--persons", "2.5"], "--persons: must be an integer between 1 and 1000000, got '2.5'"),
        (["--duration", "0"], "--duration: must be more than 0 and at most 30d"),
        (["--duration", "-5m"], "--duration: must be more than 0 and at most 30d"),
        (["--duration=-5m"], "got '-5m'"),
        (["--duration", "31d"], "at most 30d (2.592e+06 s), got '31d'"),
        (["--duration", "soon"], "--duration: must look like 90, 90s, 30m, 1.5h, 1h30m"),
        (["--duration", "30m1h"], "largest first"),
        (["--seed", "-3"], "--seed: must be a non-negative integer, got '-3'"),
        (["--tick-hz", "0"], "--tick-hz: must be a number of Hz between 0.1 and 50, got '0'"),
        (["--tick-hz", "-1e3"], "between 0.1 and 50, got '-1e3'"),
        (["--start-time", "2024-05-01"], "--start-time: must be epoch seconds"),
        (["--protocol", "panic"], "--protocol: invalid choice: 'panic'"),
        (["--format", "xls"], "--format: invalid choice: 'xls'"),
        (["--persons"], "--persons: expected one argument"),
    ],
)
def test_every_bad_argument_exits_2_with_one_line_naming_flag_range_and_value(
    tmp_path, args, expected
):
    done = heartsim_cli("simulate", *args, "--out", str(tmp_path / "never"))
    assert done.returncode == 2
    assert done.stderr.startswith("heartsim simulate: error: ") and expected in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "never").exists()  # refused before anything was written


def test_out_must_be_a_writable_folder(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (str(a_file), "(this is a file)"),
        (str(a_file / "sub"), f"({a_file} is a file)"),
        ("/proc/heartsim-nope", "(/proc: "),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((str(locked / "data"), "Permission denied"))
    for out, reason in cases:
        done = heartsim_cli("simulate", "--duration", "10", "--out", out)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("heartsim simulate: error: --out: must be a folder")
        assert reason in done.stderr and f"got '{out}'" in done.stderr
        assert done.stderr.count("\n") == 1


def test_summary_table_has_one_row_per_phase_with_medians_over_persons():
    result = heartsim.simulate(n_persons=4, duration_s=1800, seed=7)
    table = summary_table(result)
    per_person = result.summary()
    assert list(table.index) == ["rest", "stress", "recovery"]
    assert table["persons"].tolist() == [4, 4, 4]
    assert table["beats"].sum() == len(result.beats)
    rest = per_person.xs("rest", level="phase")
    assert table.loc["rest", "rmssd_ms"] == round(rest["rmssd_ms"].median(), 1)
