"""A tiny Llama for CPU runs of the decoder tasks: 2 layers, hidden 64 (bitsandbytes quantizes in
blocks of 64), random weights from a config, and a byte-level BPE tokenizer trained on the given
JSONL files' text (GSM8K's question/answer or prompt/completion rows): BOS before every text, EOS
and a pad token of its own, a chat template. It shows the pipeline and its costs; it is not meant
to solve anything. The tests build theirs with `build` too.

    python benchmarks/tiny_llama.py OUT_DIR tests/fixtures/gsm8k/train.jsonl [more.jsonl ...]
    python benchmarks/tiny_llama.py --smoke     # built from the GSM8K fixture in a temporary folder,
                                                # read back and asked for 4 tokens (CI)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gsm8k"

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def texts(files: list[Path]) -> list[str]:
    rows = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [f"Question: {r.get('question', r.get('prompt', ''))}\nAnswer: {r.get('answer', r.get('completion', ''))}"
            for r in rows]


def build(out: Path, files: list[Path], vocab_size: int = 400, hidden_size: int = 64, layers: int = 2) -> Path:
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
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                                         intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                                         pad_token_id=0))
    model.save_pretrained(out, safe_serialization=True)
    return out


def smoke() -> None:
    """What the decoder tests rely on: the folder loads with transformers' Auto classes and generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        out = build(Path(folder), [FIXTURE / "train.jsonl"])
        tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
        prompt = tokenizer("Question: 2 + 3?\nAnswer:", return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new = generated.shape[1] - prompt["input_ids"].shape[1]
        assert prompt["input_ids"][0, 0] == tokenizer.bos_token_id and new > 0, "no BOS, or nothing generated"
        print(f"tiny llama: {model.num_parameters():,} params, vocab {len(tokenizer)}, generated {new} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("files", type=Path, nargs="*", help="JSONL files whose text trains the tokenizer")
    parser.add_argument("--vocab", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="build from the GSM8K fixture, load and generate")
    args = parser.parse_args()
    if args.smoke:
        return smoke()
    if args.out is None or not args.files:
        parser.error("give OUT_DIR and at least one JSONL file (or --smoke)")
    print(build(args.out, args.files, args.vocab))


if __name__ == "__main__":
    main()
