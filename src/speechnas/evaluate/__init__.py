"""Evaluation: error rates, decoding over a corpus."""
