"""Shared fixtures: a tiny BERT built from a config with a vocab written here,
and the livedoor sample shipped in examples/. Nothing touches the network."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from peftbench.collector import tune_collection

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "livedoor-sample"
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ["HF_HUB_OFFLINE"] = "1"  # a test that tries the hub fails at once instead of retrying
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per test worker (and the processes it starts): pytest-xdist runs one worker per
    # core, and two-thread workers on two cores would fight over them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As in a `peftbench` process (collector.tune_collection): fewer collector passes over torch's and
# transformers' objects, and none at exit (a test worker's heap holds every model its tests built).
tune_collection()


# marker -> (the distribution its tests run, the extra that installs it)
EXTRA_MARKERS = {"adapters": ("adapters", "AdapterHub's library"), "quant": ("bitsandbytes", "bitsandbytes")}

# The files that take longest (measured: `--durations`), in that order. `-n auto --dist loadfile`
# hands files to the test workers in collection order, so these start first and the last files
# to start are short ones: no long file ends up running alone at the end.
LONGEST_FIRST = ("test_benchmarks.py", "test_slurm_executor.py", "test_learning.py", "test_workers.py",
                 "test_tuning.py", "test_tutorial.py", "test_suite.py", "test_end_to_end.py", "test_processes.py",
                 "test_corpus_kwdlc.py", "test_scratch_backbone.py", "test_compile.py", "test_faults.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's default orders files by test count
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """The longest files first (LONGEST_FIRST). Tests marked `adapters` (AdapterHub) or `quant`
    (bitsandbytes) run a library of an extra: where it is not installed (the default environment,
    transformers 5) they skip, saying so; `make test` runs them in the second environment
    (.venv-adapters, transformers 4.57)."""
    from peftbench.components.installed import is_installed

    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order

    for marker, (distribution, what) in EXTRA_MARKERS.items():
        if is_installed(distribution):
            continue
        skip = pytest.mark.skip(reason=f"needs {what}: pip install 'peftbench[{marker}]' "
                                       "(make test runs these in .venv-adapters)")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("PEFTBENCH_DATA", raising=False)


def _sample_characters(limit: int = 600) -> list[str]:
    counts: Counter[str] = Counter()
    for path in sorted(SAMPLE.glob("*/*.txt")):
        if path.name != "LICENSE.txt":
            counts.update(ch for ch in path.read_text(encoding="utf-8") if not ch.isspace())
    return [ch for ch, _ in counts.most_common(limit)]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a character vocab of the sample's most common characters."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    chars = _sample_characters()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # From the folder's vocab.txt: transformers 5's constructor takes `vocab`, 4's `vocab_file`.
    tokenizer = BertTokenizerFast.from_pretrained(directory, do_lower_case=False, tokenize_chinese_chars=True)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_without_dropout(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT with dropout off: two runs then differ only in how they batch."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = BertConfig.from_pretrained(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel.from_pretrained(tiny_bert, config=config).save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_mlm(tmp_path_factory, tiny_bert) -> Path:
    """The same tiny BERT saved with a (random) masked-LM head, as a checkpoint that has one."""
    import shutil

    import torch
    from transformers import BertConfig, BertForMaskedLM

    directory = tmp_path_factory.mktemp("tiny-bert-mlm")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (tiny_bert / name).exists():
            shutil.copy(tiny_bert / name, directory / name)
    torch.manual_seed(1)
    config = BertConfig.from_pretrained(tiny_bert)
    BertForMaskedLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="session")
def sample_tsv(tmp_path_factory) -> Path:
    """A label<TAB>text dataset (train.tsv / test.tsv, no dev) made from the livedoor sample's titles."""
    directory = tmp_path_factory.mktemp("tsv-classification")
    rows: dict[str, list[str]] = {"train": [], "test": []}
    for category in ("it-life-hack", "sports-watch", "movie-enter"):
        files = sorted(p for p in (SAMPLE / category).glob("*.txt") if p.name != "LICENSE.txt")[:30]
        for number, path in enumerate(files):
            lines = path.read_text(encoding="utf-8").splitlines()
            text = (lines[2] + " " + "".join(lines[3:6])).replace("\t", " ")[:200]
            rows["test" if number % 3 == 0 else "train"].append(f"{category}\t{text}")
    for split, lines in rows.items():
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


def corpus_or_skip(name: str) -> Path:
    """Real corpora under ../shared/data: under CI a missing corpus fails, locally it skips."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"corpus {path} is missing (CI=true requires ../shared/data)")
        pytest.skip(f"corpus {path} not present")
    return path


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the real console entry point in-process: exit code, stdout, stderr."""
    from peftbench.cli.entry import main

    def invoke(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["peftbench", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def _tiny_generator(directory: Path, tiny_bert: Path, kind: str) -> Path:
    """A tiny seq2seq (T5) or causal (GPT-2, RWKV) model from a config, with the tiny BERT's char tokenizer."""
    import shutil

    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, RwkvConfig, RwkvForCausalLM, T5Config,
                              T5ForConditionalGeneration)

    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (tiny_bert / name).exists():
            shutil.copy(tiny_bert / name, directory / name)
    vocab = len((tiny_bert / "vocab.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(0)
    if kind == "t5":
        model = T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=16, num_layers=1,
                                                    num_heads=2, pad_token_id=0, eos_token_id=3,
                                                    decoder_start_token_id=0))
    elif kind == "rwkv":
        model = RwkvForCausalLM(RwkvConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                           attention_hidden_size=32, intermediate_size=64, context_length=256,
                                           bos_token_id=3, eos_token_id=3, pad_token_id=0))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=256,
                                           bos_token_id=3, eos_token_id=3, pad_token_id=0))
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory, tiny_bert) -> Path:
    return _tiny_generator(tmp_path_factory.mktemp("tiny-t5"), tiny_bert, "t5")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, tiny_bert) -> Path:
    return _tiny_generator(tmp_path_factory.mktemp("tiny-gpt2"), tiny_bert, "gpt2")


@pytest.fixture(scope="session")
def tiny_rwkv(tmp_path_factory, tiny_bert) -> Path:
    return _tiny_generator(tmp_path_factory.mktemp("tiny-rwkv"), tiny_bert, "rwkv")


GSM8K_FIXTURE = REPO / "tests" / "fixtures" / "gsm8k"


def _tiny_llama_builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_llama", REPO / "benchmarks" / "tiny_llama.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """benchmarks/tiny_llama.py's 2-layer Llama, its tokenizer trained on the GSM8K fixture's text."""
    files = [GSM8K_FIXTURE / "train.jsonl", GSM8K_FIXTURE / "test.jsonl"]
    return _tiny_llama_builder().build(tmp_path_factory.mktemp("tiny-llama"), files)
