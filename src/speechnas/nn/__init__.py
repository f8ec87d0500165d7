"""Neural building blocks and models."""
