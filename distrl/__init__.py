"""distrl: Ray-distributed RL post-training for language models."""
