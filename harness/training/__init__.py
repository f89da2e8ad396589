"""Training as a fixture-driven step, on Lightning.

config (TrainingConfig, config_hash), recipe (the user's optimizer, freeze/unfreeze, scheduler, loss),
module (the LightningModule around any spec), trainer (factory and strategy guardrails), presets,
data (local text through ``datasets``, digits), runs (cached ``train`` and ``run_grid_sweep``),
schedulers (the generic schedules and the registry a model adds its own to). A model's own pieces (its loss
modifiers, its schedule) live with the model, in the zoo, never here.
"""
