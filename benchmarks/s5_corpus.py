"""Write a task's training split as .txt files with short lines, for `peftbench backbone build`.

TextGCN's English sets are lower-cased without sentence punctuation, so the
builder's sentence splitter would see one sentence per document and make no
next-sentence pairs; here each document is cut into lines of WORDS words.
Only the training split is written (dev/test never reach pre-training).

    python benchmarks/s5_corpus.py r8 OUT_DIR --set data_dir=../shared/data/textgcn [--words 24]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from peftbench.config import apply_sets, parse_sets
from peftbench.components.plugins import default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--words", type=int, default=24)
    parser.add_argument("--smoke", action="store_true", help="the first 40 documents only: checks it runs (CI)")
    args = parser.parse_args()
    task = default().tasks.get(args.task)
    config = apply_sets({"task": task.default_config()}, parse_sets(args.sets))["task"]
    train = task.load(config).train[:40 if args.smoke else None]
    args.out.mkdir(parents=True, exist_ok=True)
    for number, example in enumerate(train):
        words = task.text(example).split()
        lines = [" ".join(words[i:i + args.words]) for i in range(0, len(words), args.words)]
        (args.out / f"{number:05d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(train)} training documents of {args.task} to {args.out}")


if __name__ == "__main__":
    main()
