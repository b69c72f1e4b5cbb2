"""Fuzzing of every reader: see runner.py and README.md (Fuzzing)."""
