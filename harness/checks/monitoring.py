"""Tier 5: has anything drifted or regressed? Evaluation, regression gates and drift."""
