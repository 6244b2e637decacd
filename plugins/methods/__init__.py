"""Methods: how a backbone is adapted (full fine-tuning, LoRA, adapters), and the methods that wrap
them (TAPT, multi-task) with the objectives those train (masked-LM, n-grams, L3Masking)."""
