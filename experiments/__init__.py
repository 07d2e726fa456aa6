"""Experiments: benches, fidelity, evaluation and checks; product code never imports this package."""
