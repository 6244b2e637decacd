"""Methods: how a backbone is adapted (full fine-tuning, LoRA, adapters) and methods that wrap them (TAPT, multi-task)."""
