"""A tiny Llama for CPU runs of the decoder tasks: 2 layers, hidden 64 (bitsandbytes quantizes in
blocks of 64), random weights from a config, and a byte-level BPE tokenizer trained on the given
JSONL files' text (GSM8K's question/answer or prompt/completion rows): BOS before every text, EOS
and a pad token of its own, a chat template. It shows the pipeline and its costs; it is not meant
to solve anything. The tests build theirs with `build` too.

    python benchmarks/tiny_llama.py OUT_DIR tests/fixtures/gsm8k/train.jsonl [more.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def texts(files: list[Path]) -> list[str]:
    rows = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [f"Question: {r.get('question', r.get('prompt', ''))}\nAnswer: {r.get('answer', r.get('completion', ''))}"
            for r in rows]


def build(out: Path, files: list[Path], vocab_size: int = 400) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts(files), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                                         pad_token_id=0))
    model.save_pretrained(out, safe_serialization=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("files", type=Path, nargs="+", help="JSONL files whose text trains the tokenizer")
    parser.add_argument("--vocab", type=int, default=400)
    args = parser.parse_args()
    print(build(args.out, args.files, args.vocab))


if __name__ == "__main__":
    main()
