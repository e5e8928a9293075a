"""Experiments that produce the repository's evidence: training parity with the official engine and the study."""
