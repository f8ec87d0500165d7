"""Speech data: manifests, audio, the synthetic corpus, features, tokens and batching."""
