"""The GSM8K suite (benchmarks/gsm8k-qwen.toml): tune, run the finals, print the report's table.

    python benchmarks/gsm8k_suite.py --results results/gsm8k-qwen [--devices 0]   # a GPU, the hub, data/gsm8k
    python benchmarks/gsm8k_suite.py --smoke                                      # CPU, about a minute

``--smoke`` runs the same suite file on a tiny Llama built from a config (benchmarks/tiny_llama.py)
and GSM8K-layout fixture files, shrunk: LoRA and prompt tuning (and QLoRA where bitsandbytes is
installed), 1 trial each, 1 seed, 1 epoch, 8 new tokens. Its scores mean nothing; it checks the
path from suite to table. Anything else on the command line goes to `peftbench suite run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = HERE / "gsm8k-qwen.toml"
FIXTURE = HERE.parent / "tests" / "fixtures" / "gsm8k"
SMOKE_SET = {"data_dir": str(FIXTURE), "dev_fraction": 0.2, "max_prompt_length": 96, "max_length": 160,
             "max_new_tokens": 8, "batch_size": 4, "epochs": 1, "mixed_precision": "no", "warmup_ratio": 0.0}


def toml_lines(table: dict, prefix: str = "") -> list[str]:
    """A suite as TOML (its values are strings, numbers, booleans and lists of them: JSON spells
    each the way TOML does)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, (dict, list))
             or (isinstance(v, list) and not any(isinstance(x, dict) for x in v))]
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", *toml_lines(value, f"{name}.")]
        elif isinstance(value, list) and any(isinstance(x, dict) for x in value):
            for item in value:
                lines += ["", f"[[{name}]]", *toml_lines(item, f"{name}.")]
    return lines


def smoke_suite(out: Path) -> Path:
    """The suite file, shrunk onto a tiny Llama (see the module docstring)."""
    spec = importlib.util.spec_from_file_location("tiny_llama", HERE / "tiny_llama.py")
    tiny_llama = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_llama)
    backbone = tiny_llama.build(out / "tiny-llama", [FIXTURE / "train.jsonl", FIXTURE / "test.jsonl"])
    suite = tomllib.loads(SUITE.read_text(encoding="utf-8"))
    suite["defaults"].update(backbone=str(backbone), seeds=[1])
    suite["defaults"]["set"].update(SMOKE_SET)
    suite["tune"]["trials"] = 1
    quant = importlib.util.find_spec("bitsandbytes") is not None
    suite["runs"] = [run for run in suite["runs"] if run.get("name", run["method"]) in ("lora", "prompt-tuning")
                     or (quant and run.get("name") == "qlora")]
    for run in suite["runs"]:
        if run.get("set", {}).get("quantize_compute_dtype"):
            run["set"]["quantize_compute_dtype"] = "float32"  # CPU
    path = out / "gsm8k-smoke.toml"
    path.write_text("\n".join(toml_lines(suite)) + "\n", encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the suite on a tiny Llama on CPU (CI runs it)")
    parser.add_argument("--results", type=Path, default=None, help="run records (default results/gsm8k-qwen)")
    args, rest = parser.parse_known_args()
    scratch = Path(tempfile.mkdtemp(prefix="gsm8k-smoke-")) if args.smoke else None
    suite = smoke_suite(scratch) if scratch else SUITE
    results = args.results or (scratch / "runs" if scratch else Path("results/gsm8k-qwen"))
    peftbench = [sys.executable, "-m", "peftbench"]
    subprocess.run([*peftbench, "suite", "run", str(suite), "--results", str(results), *rest], check=True)
    subprocess.run([*peftbench, "report", str(results)], check=True)


if __name__ == "__main__":
    main()
