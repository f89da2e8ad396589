"""Training: schedulers, loss modifiers; the Lightning trainer comes with Tier 3."""
