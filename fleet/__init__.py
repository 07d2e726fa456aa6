"""GPU slots at fleet scale (seed 000's formulation): the fleet simulator on the one
discrete-event core, DNN-Adapt's PPO, Nexus's squishy bin packing, baselines and the bound."""
