"""Causal analysis of a trace: statistics per op and the causal chains that explain its stalls."""

from ingero.analyse.chain import CausalChain, TimelineEvent, cause_kinds
from ingero.analyse.chains import Analysis, analyse
from ingero.analyse.load import Window
from ingero.analyse.stored import stored_chains

__all__ = ["Analysis", "CausalChain", "TimelineEvent", "Window", "analyse", "cause_kinds", "stored_chains"]
