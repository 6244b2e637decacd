"""What the generation tasks need to know about a model family."""

# Recurrent models ignore attention masks: padding in front of a prompt would enter their state, so
# they generate one prompt at a time (training is unaffected: padding follows the text there).
UNMASKED_FAMILIES = ("rwkv", "mamba")
