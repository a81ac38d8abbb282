"""Training recipes of the reference models, one module each; `models.training.run_recipe` dispatches."""
