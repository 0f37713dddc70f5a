import dataclasses

import numpy as np
import pytest

from heartsim import PersonProfile, sample_population
from heartsim.physiology.profiles import PROFILE_RANGES


def test_population_is_varied_realistic_and_deterministic():
    people = sample_population(200, seed=3)
    assert [p.person_id for p in people[:3]] == ["p0", "p1", "p2"]
    hr = np.array([p.resting_hr_bpm for p in people])
    breathing = np.array([p.breathing_rate_bpm for p in people])
    assert hr.min() >= 55 and hr.max() <= 85 and hr.std() > 4
    assert breathing.min() >= 11 and breathing.max() <= 20 and breathing.std() > 1
    sbp = np.array([p.systolic_mmhg for p in people])
    dbp = np.array([p.diastolic_mmhg for p in people])
    assert 105 < np.median(sbp) < 130 and 65 < np.median(dbp) < 85
    assert sample_population(200, seed=3) == people
    assert sample_population(200, seed=4) != people


def test_lower_resting_heart_rate_goes_with_more_vagal_hrv():
    people = sample_population(300, seed=1)
    hr = [p.resting_hr_bpm for p in people]
    rsa = [p.rsa_amplitude_ms for p in people]
    assert np.corrcoef(hr, rsa)[0, 1] < -0.2


@pytest.mark.parametrize("field", sorted(PROFILE_RANGES))
def test_every_profile_field_is_range_checked(field):
    low, high = PROFILE_RANGES[field]
    with pytest.raises(ValueError, match=field):
        PersonProfile(**{field: high + 1})
    with pytest.raises(ValueError, match=field):
        PersonProfile(**{field: low - 1})


def test_profile_rejects_bad_ids_and_inverted_pressure():
    with pytest.raises(ValueError, match="person_id"):
        PersonProfile(person_id="")
    with pytest.raises(ValueError, match="diastolic_mmhg"):
        PersonProfile(systolic_mmhg=100, diastolic_mmhg=95)
    with pytest.raises(ValueError, match="n must be"):
        sample_population(0)


def test_default_profile_round_trips_through_replace():
    p = PersonProfile()
    q = p.replace(resting_hr_bpm=60.0)
    assert q.resting_hr_bpm == 60.0
    assert dataclasses.replace(q, resting_hr_bpm=72.0) == p
