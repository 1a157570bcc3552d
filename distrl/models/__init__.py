"""Models: the tiny built-in causal LM, loading, and per-token log-prob / entropy / value computation."""
