"""The pure physiological model: profiles, stress kinetics and the beat generator (no I/O)."""

from heartsim.physiology.beats import BeatBlock, BeatState, generate_beats
from heartsim.physiology.profiles import (
    PROFILE_RANGES,
    PersonProfile,
    ProfileArrays,
    sample_population,
)
from heartsim.physiology.stress import LABELS, Episode, Schedule

__all__ = [
    "LABELS",
    "PROFILE_RANGES",
    "BeatBlock",
    "BeatState",
    "Episode",
    "PersonProfile",
    "ProfileArrays",
    "Schedule",
    "generate_beats",
    "sample_population",
]
