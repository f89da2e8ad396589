"""Tier 2: does the model behave sensibly? Attention, attribution, robustness, ablation, memory."""
