"""Each method family's default learning rate and the range tuning searches, with where they come
from. One table, so the built-in methods (full, BitFit, LoRA, adapters, every peft tuner, every
`adapters-<name>` configuration) take their defaults from the same place the docs list them from
(docs/tasks-and-methods.md, "Learning rates").

Every method trains with AdamW and one learning rate for all that trains (the task head included),
so a family whose published rate was found with another optimiser (prompt tuning's 0.3 with
Adafactor) takes the AdamW rate its later papers use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    lr: float  # the default
    low: float  # tuning's log-uniform range
    high: float
    source: str


FAMILIES = {f.name: f for f in (
    Family("full", 5e-5, 1e-5, 2e-4,
           "BERT (Devlin et al., 2019): 2e-5..5e-5 for fine-tuning"),
    Family("head", 1e-3, 1e-4, 1e-2,
           "linear probing (Kumar et al., 2022, 'Fine-Tuning can Distort Pretrained Features'): "
           "a linear head on frozen features trains at ~1e-3 with Adam"),
    Family("bitfit", 1e-3, 1e-4, 1e-2,
           "BitFit (Ben Zaken et al., 2022): 1e-4..1e-3, biases need larger steps than full FT"),
    Family("lora", 5e-4, 5e-5, 5e-3,
           "LoRA (Hu et al., 2021): 4e-4..5e-4 on RoBERTa-base GLUE; 'LoRA Without Regret' "
           "(Schulman et al., 2025): ~10x full fine-tuning's rate; LoHa/LoKr (LyCORIS) alike"),
    Family("bottleneck", 1e-3, 1e-4, 1e-2,
           "Adapters (Houlsby et al., 2019): 3e-4..3e-3; AdapterHub (Pfeiffer et al., 2020): 1e-4..1e-3"),
    Family("scaling", 3e-3, 3e-4, 3e-2,
           "(IA)3 / T-Few (Liu et al., 2022): 3e-3; vectors that rescale activations start at 1"),
    Family("vector-bank", 4e-3, 4e-4, 4e-2,
           "VeRA (Kopiczko et al., 2024): 4e-3..1e-2 for its scaling vectors on GLUE"),
    Family("spectral", 2e-2, 2e-3, 1e-1,
           "FourierFT (Gao et al., 2024): 5e-2..1e-1 for its spectral coefficients on GLUE "
           "(here shared with the head, so a lower default); C3A (Chen et al., 2025) trains circulant "
           "kernels in the same Fourier domain: at the LoRA range it did not learn tests/test_learning.py's "
           "task, at 2e-2 it did"),
    Family("subspace", 5e-4, 5e-5, 5e-2,
           "AdaMSS (peft 0.21): peft's MetaMathQA experiment trains 32 rank-1 SVD subspaces at 1e-4 on "
           "Llama-3.2-3B; peft's default of 5 trains far fewer parameters: at LoRA's range it did not learn "
           "tests/test_learning.py's task (0.75 at 5e-3), at 1e-2..5e-2 it did, so the range reaches 5e-2"),
    Family("prompt", 3e-2, 1e-3, 3e-1,
           "Prompt tuning (Lester et al., 2021): 0.3 with Adafactor; 3e-2 with AdamW as in peft's "
           "prompt-tuning guide; trainable tokens (embedding rows, like the virtual tokens) alike: at the "
           "LoRA range they did not learn tests/test_learning.py's task, at 3e-2 they did"),
    Family("prefix", 1e-2, 1e-3, 1e-1,
           "P-tuning v2 (Liu et al., 2022): 5e-3..1e-2 for deep prompts on encoders; "
           "Prefix-tuning (Li & Liang, 2021) trains its prefix through an MLP"),
    Family("orthogonal", 1e-3, 1e-4, 1e-2,
           "OFT (Qiu et al., 2023), BOFT (Liu et al., 2024), HRA (Yuan et al., 2024): ~1e-3 on GLUE"),
    Family("reft", 1e-3, 1e-4, 1e-2,
           "ReFT (Wu et al., 2024): 4e-4..3e-3 on GLUE"),
)}

# peft types by family; any type not named here (a peft release's new tuner) is LoRA-like.
PEFT_FAMILIES = {
    "PROMPT_TUNING": "prompt", "MULTITASK_PROMPT_TUNING": "prompt", "CPT": "prompt",
    "P_TUNING": "prefix", "PREFIX_TUNING": "prefix", "ADAPTION_PROMPT": "prefix", "CARTRIDGE": "prefix",
    "IA3": "scaling", "LN_TUNING": "scaling",
    "VERA": "vector-bank", "PVERA": "vector-bank", "VBLORA": "vector-bank",
    "FOURIERFT": "spectral", "WAVEFT": "spectral", "C3A": "spectral", "TRAINABLE_TOKENS": "prompt",
    "BOFT": "orthogonal", "OFT": "orthogonal", "HRA": "orthogonal", "ROAD": "orthogonal", "PSOFT": "orthogonal",
    "GOFT": "orthogonal",
    "ADAMSS": "subspace",
}

# The adapters library's configuration classes by family (bottleneck for the rest: Bn, Compacter, MAM...).
ADAPTERS_FAMILIES = {
    "LoRAConfig": "lora", "DoRAConfig": "lora", "MTLLoRAConfig": "lora",
    "VeraConfig": "vector-bank", "IA3Config": "scaling",
    "PrefixTuningConfig": "prefix", "PromptTuningConfig": "prompt",
    "LoReftConfig": "reft", "NoReftConfig": "reft", "DiReftConfig": "reft", "ReftConfig": "reft",
}


def peft_family(peft_type: str) -> Family:
    return FAMILIES[PEFT_FAMILIES.get(peft_type, "lora")]


def adapters_family(config_class: str) -> Family:
    return FAMILIES[ADAPTERS_FAMILIES.get(config_class, "bottleneck")]
