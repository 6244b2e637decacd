"""Tasks: datasets with their encoding, decoding and scores."""
