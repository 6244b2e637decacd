"""Tiny generation backbones for CPU runs of S4: a T5 (seq2seq) and a GPT-2 (causal) built from
a config with random weights, sharing a character WordPiece vocabulary made from the training
split of livedoor-title2article. They show the pipeline and its costs; their text is not
meant to be good (no pre-training).

    python benchmarks/s4_tiny_backbones.py OUT_DIR --set data_dir=examples/livedoor-sample [--vocab 3000]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch
from transformers import BertTokenizerFast, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from peftbench.config import apply_sets, parse_sets
from peftbench.components.plugins import default

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--vocab", type=int, default=3000, help="most frequent characters kept")
    parser.add_argument("--smoke", action="store_true", help="a 300-character vocabulary: checks it runs (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.vocab = 300
    task = default().tasks.get("livedoor-title2article")
    config = apply_sets({"task": task.default_config()}, parse_sets(args.sets))["task"]
    train = task.load(config).train
    counts = Counter(ch for ex in train for ch in ex["title"] + ex["body"] if not ch.isspace())
    chars = [ch for ch, _ in counts.most_common(args.vocab)]
    vocab = SPECIALS + chars + [f"##{ch}" for ch in chars]
    for kind in ("t5", "gpt2"):
        out = args.out / f"tiny-{kind}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        BertTokenizerFast.from_pretrained(out, do_lower_case=False).save_pretrained(out)  # from vocab.txt
        torch.manual_seed(0)
        if kind == "t5":
            model = T5ForConditionalGeneration(T5Config(vocab_size=len(vocab), d_model=128, d_ff=512, d_kv=32,
                                                        num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=3,
                                                        decoder_start_token_id=0))
        else:
            model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_embd=128, n_layer=2, n_head=4,
                                               n_positions=512, bos_token_id=3, eos_token_id=3, pad_token_id=0))
        model.save_pretrained(out, safe_serialization=True)
        print(f"{out}: {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(vocab):,}")


if __name__ == "__main__":
    main()
