"""Training loops for the two model families, and what they share (progress output, checkpoints)."""
