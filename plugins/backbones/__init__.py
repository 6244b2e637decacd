"""Backbones: Hugging Face models (hub ids, local folders) and small BERTs built from scratch."""
