"""Experiments: benches, fidelity, evaluation and checks.

Product code (the sidecar, the policies, the simulator, the planner) never imports this package.
"""
