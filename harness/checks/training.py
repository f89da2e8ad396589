"""Tier 3: does it train? Training runs as a fixture; these checks validate the runs."""
