"""Recipes and their runner: what a recipe is (recipe.py), `agrl run` scheduling its steps as jobs (runner.py),
and `agrl demo` on the built-in recipe (demo.py)."""
