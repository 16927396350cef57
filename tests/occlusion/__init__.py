"""Self-tests of the occlusion engine, its Hypothesis strategies and its pictures."""
