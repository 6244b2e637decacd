"""Backbones built by peftbench (study S3): a word-split-aware WordPiece vocabulary
and a small BERT pre-trained from scratch with masked-LM + next-sentence prediction.

    peftbench backbone build --corpus livedoor-news --set data_dir=PATH --out DIR --preset tiny

The vocabulary is trained with the `tokenizers` WordPiece trainer on text
split into words by MeCab (fugashi + unidic-lite), as cl-tohoku BERT does,
and the result is saved as a transformers BertJapaneseTokenizer (MeCab word
split + WordPiece) so every task tokenises exactly as in pre-training.
Documents are cut into sentences (at 。！？ and line ends); each example is a
sentence pair, the second sentence replaced by a random one from another
document half of the time (NSP); 15% of tokens are masked 80/10/10. Every
epoch reports MLM and NSP accuracy on a held-out slice (S3's sign that
pre-training works), writes a checkpoint, and a killed build resumes from
the last finished epoch. The output folder is a normal local backbone
(config, safetensors weights, tokenizer, build_info.json), registered by
name in `<cache>/backbones.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peftbench.sdk import (Components, ConfigError, DataError, TrainingError, apply_sets, cache_root, load_splits,
                           parse_sets)

from .huggingface import HuggingFaceBackbone

SENTENCE_END = re.compile(r"(?<=[。！？!?])|\n")
PRESETS = {
    # S3: small data needs a small model; these settings made NSP accuracy rise.
    "s3": dict(hidden=256, layers=8, heads=8, seq_len=60, batch_size=64, epochs=10, lr=1e-3, min_frequency=7,
               vocab_size=50000, dropout=0.0),
    # Minutes on 2 CPU cores.
    "tiny": dict(hidden=128, layers=2, heads=2, seq_len=64, batch_size=32, epochs=3, lr=1e-3, min_frequency=3,
                 vocab_size=8000, dropout=0.0),
}


@dataclass(frozen=True)
class BuildConfig:
    hidden: int
    layers: int
    heads: int
    seq_len: int
    batch_size: int
    epochs: int
    lr: float
    min_frequency: int
    vocab_size: int
    dropout: float
    held_out: float = 0.05
    max_documents: int | None = None
    seed: int = 42


def registry_path() -> Path:
    return cache_root() / "backbones.json"


def read_registry() -> dict[str, str]:
    try:
        return json.loads(registry_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def sentences(document: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(document) if s.strip()]


class WordSplitter:
    """MeCab word split with unidic-lite, the dictionary the saved tokenizer uses too."""

    def __init__(self) -> None:
        import os

        import fugashi
        import unidic_lite

        mecabrc = os.path.join(unidic_lite.DICDIR, "mecabrc")
        self.tagger = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}" -r "{mecabrc}"')

    def __call__(self, text: str) -> list[str]:
        return [word.surface for word in self.tagger(text)]


def documents_from(corpus: str, sets: list[str], components: Components) -> tuple[list[str], str]:
    """Documents from a task's training split (+ dev/test are never used) or a folder of .txt files."""
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.name != "LICENSE.txt")
        docs = []
        for file in files:
            try:
                docs.append(file.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{file} is not UTF-8 text", "the corpus folder must hold UTF-8 .txt files") from None
        return docs, str(path.resolve())
    if corpus not in components.tasks:
        raise DataError(f"--corpus {corpus!r} is neither a folder nor a task",
                        f"pass a folder of .txt files or one of: {', '.join(e.name for e in components.tasks)}")
    task = components.tasks.get(corpus)
    config = apply_sets({"task": task.default_config()}, parse_sets(sets))["task"]
    splits = load_splits(task, config)
    try:
        texts = [task.text(example) for example in splits.train]
    except NotImplementedError as exc:
        raise DataError(str(exc), "choose a task with raw text or a folder") from None
    return texts, f"task {corpus} train split ({splits.info.get('source')})"


def train_vocabulary(words_per_line: list[list[str]], config: BuildConfig, out: Path, log=print) -> Path:
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                                       lowercase=False)
    tokenizer.train_from_iterator((" ".join(words) for words in words_per_line), vocab_size=config.vocab_size,
                                  min_frequency=config.min_frequency, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    size = tokenizer.get_vocab_size()
    if size < 100:
        raise DataError(f"the corpus gives a vocabulary of only {size} entries at min_frequency "
                        f"{config.min_frequency}", "use more text or a lower --set min_frequency=N")
    if size < config.vocab_size:
        log(f"note: the corpus gives {size:,} vocabulary entries, fewer than the requested {config.vocab_size:,}, "
            f"at min_frequency {config.min_frequency} (lower it for more)")
    tokenizer.save_model(str(out))
    return out / "vocab.txt"


def make_pairs(docs: list[list[str]], rng: random.Random) -> list[tuple[str, str, int]]:
    """(sentence A, sentence B, label): label 0 = B follows A, 1 = B is from another document."""
    pairs = []
    multi = [i for i, d in enumerate(docs) if d]
    for index, doc in enumerate(docs):
        for position in range(0, len(doc) - 1, 2):  # documents cut to an even number of sentences
            first, second, label = doc[position], doc[position + 1], 0
            if rng.random() < 0.5 and len(multi) > 1:
                other = rng.choice(multi)
                while other == index:
                    other = rng.choice(multi)
                second, label = rng.choice(docs[other]), 1
            pairs.append((first, second, label))
    return pairs


def evaluate(model, loader) -> dict[str, float]:
    import torch

    model.eval()
    mlm_right = mlm_total = nsp_right = nsp_total = 0
    with torch.no_grad():
        for batch in loader:
            out = model(**batch)
            chosen = batch["labels"] != -100
            mlm_right += (out.prediction_logits.argmax(-1)[chosen] == batch["labels"][chosen]).sum().item()
            mlm_total += chosen.sum().item()
            nsp_right += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
            nsp_total += batch["next_sentence_label"].numel()
    model.train()
    return {"mlm_accuracy": mlm_right / max(mlm_total, 1), "nsp_accuracy": nsp_right / max(nsp_total, 1)}


def build(corpora: list[str], sets: list[str], out: Path, preset: str, overrides: dict[str, Any], name: str | None,
          overwrite: bool, components: Components, log=print) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling

    config = _settings(preset, overrides)
    checkpoint = _prepare_out(out, overwrite)
    texts, source, corpus_hash = _corpus(corpora, sets, components, config)
    docs = [sentences(t) for t in texts]
    tokenizer = _tokenizer(docs, config, out, log)
    rng = random.Random(config.seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    held = max(1, int(len(docs) * config.held_out))
    held_docs, train_docs = [docs[i] for i in order[:held]], [docs[i] for i in order[held:]]
    held_pairs = _encode_pairs(tokenizer, config, make_pairs(held_docs, random.Random(config.seed + 1)))
    if not held_pairs or len(train_docs) < 2:
        raise DataError(f"the corpus {source} is too small: it needs several documents of 2+ sentences")
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    torch.manual_seed(config.seed)
    held_loader = DataLoader(held_pairs, batch_size=config.batch_size, collate_fn=collator)
    bert = BertConfig(vocab_size=len(tokenizer), hidden_size=config.hidden, num_hidden_layers=config.layers,
                      num_attention_heads=config.heads, intermediate_size=4 * config.hidden,
                      max_position_embeddings=max(128, config.seq_len), hidden_dropout_prob=config.dropout,
                      attention_probs_dropout_prob=config.dropout)
    model = BertForPreTraining(bert)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.999), weight_decay=0.0)
    history, start_epoch = _resume(checkpoint, model, optimizer, config, corpus_hash, out, log)
    before = evaluate(model, held_loader) if start_epoch == 1 else history[0]["before"]
    run = _Pretraining(model, optimizer, config, collator, held_loader, checkpoint, corpus_hash, log)
    run.epochs(tokenizer, train_docs, start_epoch, history, before)
    model.save_pretrained(out, safe_serialization=True)
    info = {"preset": preset, "config": asdict(config), "corpus": source, "corpus_sha256_16": corpus_hash,
            "documents": len(texts), "held_out_documents": held, "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()), "held_out_before_training": before,
            "history": history}
    (out / "build_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(checkpoint, ignore_errors=True)
    if name:
        _register(name, out)
    return info


def _settings(preset: str, overrides: dict[str, Any]) -> BuildConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}", f"choose {' or '.join(PRESETS)}")
    try:
        return BuildConfig(**{**PRESETS[preset], **overrides})
    except TypeError as exc:
        raise ConfigError(f"bad build setting: {exc}") from None


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """The output folder, emptied with --overwrite; returns where an interrupted build's checkpoint is."""
    checkpoint = out / ".checkpoint"
    if out.exists() and any(out.iterdir()) and (overwrite or not checkpoint.exists()):
        if not overwrite:
            raise ConfigError(f"output folder {out} exists", "pass --overwrite to replace it, or another --out")
        shutil.rmtree(out)  # --overwrite starts afresh, an interrupted build's checkpoint included
    out.mkdir(parents=True, exist_ok=True)
    return checkpoint


def _corpus(corpora: list[str], sets: list[str], components: Components,
            config: BuildConfig) -> tuple[list[str], str, str]:
    """(texts, where they came from, their hash)."""
    texts, sources = [], []
    for corpus in corpora:
        found, source = documents_from(corpus, sets, components)
        texts += found
        sources.append(source)
    source = "; ".join(sources)
    texts = [t for t in texts if t.strip()][: config.max_documents]
    if not texts:
        raise DataError(f"the corpus {source} holds no text")
    return texts, source, hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def _tokenizer(docs: list[list[str]], config: BuildConfig, out: Path, log):
    from transformers import BertJapaneseTokenizer

    if not (out / "vocab.txt").exists():
        log(f"training the vocabulary on {len(docs):,} documents")
        split = WordSplitter()
        train_vocabulary([split(s) for d in docs for s in d], config, out, log)
    tokenizer = BertJapaneseTokenizer(str(out / "vocab.txt"), do_lower_case=False, word_tokenizer_type="mecab",
                                      mecab_kwargs={"mecab_dic": "unidic_lite"}, model_max_length=config.seq_len)
    tokenizer.save_pretrained(out)
    return tokenizer


def _encode_pairs(tokenizer, config: BuildConfig, pairs) -> list[dict]:
    enc = tokenizer([a for a, _, _ in pairs], [b for _, b, _ in pairs], truncation="longest_first",
                    max_length=config.seq_len, return_attention_mask=False, return_token_type_ids=True)
    return [{"input_ids": ids, "token_type_ids": types, "next_sentence_label": label}
            for ids, types, (_, _, label) in zip(enc["input_ids"], enc["token_type_ids"], pairs)]


def _resume(checkpoint: Path, model, optimizer, config: BuildConfig, corpus_hash: str, out: Path,
            log) -> tuple[list[dict[str, Any]], int]:
    """(history, first epoch to train): an interrupted build of the same settings and corpus goes on."""
    import torch

    if not (checkpoint / "state.pt").exists():
        return [], 1
    try:  # tensors, numbers and strings only: a planted pickle cannot run code here
        state = torch.load(checkpoint / "state.pt", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{checkpoint / 'state.pt'} holds more than tensors and settings ({exc})",
                          "it was not written by `peftbench backbone build`: pass --overwrite") from None
    # Only more epochs may differ from the interrupted build; anything else would mix two builds.
    same = {k: v for k, v in asdict(config).items() if k != "epochs"}
    if state.get("settings", same) != same or state.get("corpus", corpus_hash) != corpus_hash:
        raise ConfigError(f"{out} holds an interrupted build with other settings or another corpus",
                          "pass --overwrite to start afresh, or the same settings to resume it")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log(f"resuming after epoch {state['epoch']}")
    return state["history"], state["epoch"] + 1


@dataclass
class _Pretraining:
    """The MLM + NSP epochs, a checkpoint after each."""

    model: Any
    optimizer: Any
    config: BuildConfig
    collator: Any
    held_loader: Any
    checkpoint: Path
    corpus_hash: str
    log: Any

    def epochs(self, tokenizer, train_docs, start_epoch: int, history: list, before: dict) -> None:
        from rich.progress import Progress

        self.model.train()
        with Progress(transient=True) as bars:
            for epoch in range(start_epoch, self.config.epochs + 1):
                # New NSP pairs and masks every epoch, as BERT's data pipeline does.
                pairs = _encode_pairs(tokenizer, self.config,
                                      make_pairs(train_docs, random.Random(self.config.seed * 1000 + epoch)))
                started = time.perf_counter()
                loss_sum, steps = self._epoch(pairs, epoch, bars)
                scores = evaluate(self.model, self.held_loader)
                entry = {"epoch": epoch, "train_loss": loss_sum / max(steps, 1), "pairs": len(pairs),
                         "seconds": time.perf_counter() - started, "held_out": scores, "before": before}
                history.append(entry)
                self.log(f"epoch {epoch}: loss {entry['train_loss']:.3f}, held-out MLM accuracy "
                         f"{scores['mlm_accuracy']:.3f}, NSP accuracy {scores['nsp_accuracy']:.3f}")
                self._save(epoch, history)

    def _epoch(self, pairs: list[dict], epoch: int, bars) -> tuple[float, int]:
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(pairs, batch_size=self.config.batch_size, shuffle=True, collate_fn=self.collator,
                            generator=torch.Generator().manual_seed(epoch))
        task = bars.add_task(f"pre-training epoch {epoch}/{self.config.epochs}", total=len(loader))
        loss_sum = 0.0
        for batch in loader:
            loss = self.model(**batch).loss
            if not math.isfinite(loss.item()):
                raise TrainingError(f"pre-training loss became {loss.item()} in epoch {epoch}", "lower --set lr=")
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            bars.advance(task)
        bars.remove_task(task)
        return loss_sum, len(loader)

    def _save(self, epoch: int, history: list) -> None:
        import torch

        self.checkpoint.mkdir(exist_ok=True)
        tmp = self.checkpoint / "state.pt.tmp"
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "history": history,
                    "epoch": epoch, "corpus": self.corpus_hash,
                    "settings": {k: v for k, v in asdict(self.config).items() if k != "epochs"}}, tmp)
        tmp.replace(self.checkpoint / "state.pt")


def _register(name: str, out: Path) -> None:
    registry = read_registry()
    registry[name] = str(out.resolve())
    registry_path().parent.mkdir(parents=True, exist_ok=True)
    registry_path().write_text(json.dumps(registry, indent=2), encoding="utf-8")


class BuiltBackbone(HuggingFaceBackbone):
    """A backbone peftbench built; records carry its build config and corpus hash. Not quantized:
    its ``load`` takes no quantize arguments (a from-scratch BERT of a few million parameters gains
    nothing in k bits), so ``--set quantize=...`` is refused when the spec resolves, dry runs included."""

    quantizes = False

    def load(self, head, *, weights: bool = True):
        loaded = super().load(head, weights=weights)
        info_file = Path(self.spec) / "build_info.json"
        if info_file.exists():
            info = json.loads(info_file.read_text(encoding="utf-8"))
            loaded.info["build"] = {k: info[k] for k in ("preset", "config", "corpus", "corpus_sha256_16",
                                                         "vocab_size", "parameters")}
        return loaded
