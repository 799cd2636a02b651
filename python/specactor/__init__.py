"""SpecActor: exact speculative-decoding rollout for LLM RL post-training (Python side)."""

__version__ = "0.1.0"
