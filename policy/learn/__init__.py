"""The learning room: the Gymnasium environment, reward terms, training config, randomised
training scenarios and seed selection for PPO (Stable-Baselines3)."""
