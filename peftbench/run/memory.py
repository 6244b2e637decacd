"""Peak accelerator memory of a run, predicted before it starts, without weights and without a GPU.

Each stage's model is built as the run builds it (the backbone's architecture, the method's
wrapping, gradient checkpointing) on fake tensors (torch's FakeTensorMode: shapes and dtypes, no
storage), then one optimizer update warms the optimizer's state and the next training step is
traced by peftbench/run/memory_accounting.py: weights, gradients, optimizer state and activations at the
peak. An evaluation forward pass is traced the same way. Every row is as long as the task allows, so
the prediction is the worst batch's. A k-bit base (``quantize``) is traced with its frozen linear
layers replaced by layers of bitsandbytes' storage shape (NF4: half a byte a weight and 8-bit block
scales; LLM.int8: a byte a weight and a row scale) that dequantize into the compute dtype as they run.

What it leaves out: the CUDA context and library workspaces (NVML sees them, torch's allocator does
not), the allocator's fragmentation (``max_memory_reserved`` above ``max_memory_allocated``), a
generation's KV cache, and kernels whose memory differs between CPU and CUDA (attention on CPU and
CUDA both keep O(length) state here).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import torch

from ..api import Stage, Task
from ..config import TrainConfig
from .counting import stage_train
from ..errors import ConfigError
from .memory_accounting import accounted, inference_accounted
from .optimizers import make_optimizer
from ..records.record import MemoryPrediction, StepMemory
from .spec import Resolved

NOTE = ("torch allocator bytes of the worst batch (every row at the longest input); not counted: the CUDA "
        "context and library workspaces, allocator fragmentation, a generation's KV cache")
GB = 1e9


def predict(resolved: Resolved, device_type: str = "cuda", fake: bool = True) -> MemoryPrediction:
    """The stage with the highest training peak. ``fake=False`` runs the same step on real CPU tensors
    (zeros): the accounting of a real step, which a test holds the fake one to."""
    spec, method = resolved.spec, resolved.method
    stages = method.stages(resolved.task, spec.task_config, spec.method_config, resolved.backbone)
    predictions, previous = [], None
    for index, stage in enumerate(stages):
        train = stage_train(spec.train, stage)
        loaded = resolved.backbone.load(stage.head, weights=False)
        if train.gradient_checkpointing:
            enable_gradient_checkpointing(loaded.model, spec.backbone)
        model = method.prepare(loaded, spec.method_config, stage, previous)
        traced = copy.deepcopy(model) if index < len(stages) - 1 else model  # the next stage wraps `model`
        objective = (stage.objective or resolved.task).for_backbone(loaded)
        predictions.append(_predict_stage(resolved, stage, train, objective, traced, device_type, fake))
        previous = model
    return max(predictions, key=lambda p: p.train.peak_bytes)


def _predict_stage(resolved: Resolved, stage: Stage, train: TrainConfig, objective: Task, model: torch.nn.Module,
                   device_type: str, fake: bool) -> MemoryPrediction:
    spec, method = resolved.spec, resolved.method
    if train.quantized:
        quantize_shaped(model, int(train.quantize[0]), getattr(torch, train.quantize_compute_dtype))
    model_config = getattr(model, "config", None)
    shapes = objective.largest_batch(spec.task_config, stage.head, train.batch_size, model_config)
    eval_shapes = objective.largest_batch(spec.task_config, stage.head, train.eval_batch_size, model_config)
    mode = _fake_mode() if fake else contextlib.nullcontext()
    with mode, _autocast(train.mixed_precision):
        _materialize(model, fake)
        training = _training_peak(method, spec, stage, train, model, _batch(shapes), device_type)
        model.eval()
        with torch.no_grad(), inference_accounted(model, torch.device(device_type)) as evaluation:
            model(**_batch({k: v for k, v in eval_shapes.items() if k != "labels"}))
    length = max(shape[-1] for shape, _ in shapes.values() if len(shape) > 1)
    return MemoryPrediction(stage.name, training or evaluation.peak, evaluation.peak, train.batch_size,
                            train.eval_batch_size, length, device_type, NOTE)


def _training_peak(method, spec, stage: Stage, train: TrainConfig, model: torch.nn.Module,
                   batch: dict[str, torch.Tensor], device_type: str) -> StepMemory | None:
    """The traced training step's peak; None for a method that trains nothing (zero-shot)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return None
    optimizer = make_optimizer(train.optimizer, params, method.learning_rate(spec.method_config, stage),
                               train.weight_decay, shaped=True)
    model.train()
    _step(method, model, optimizer, batch, update=True)  # the optimizer's state, as every later step has it
    if train.accumulation_steps() > 1:  # later micro-batches start with the gradients of earlier ones
        _step(method, model, optimizer, batch, update=False)
    with accounted(model, optimizer, torch.device(device_type)) as training:
        _step(method, model, optimizer, batch, update=True)
    optimizer.zero_grad(set_to_none=True)
    return training.peak


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    # The model's meta parameters become fake ones by to_empty inside the mode.
    return FakeTensorMode(allow_non_fake_inputs=True)


def _autocast(mixed_precision: str):
    if mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)


def _materialize(model: torch.nn.Module, fake: bool) -> None:
    model.to_empty(device="cpu")
    if callable(getattr(model, "tie_weights", None)):  # to_empty gives tied weights a tensor each
        model.tie_weights()
    if not fake:  # zeros: every index valid, every value finite, whatever the layer
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                tensor.zero_()


def _batch(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    made = {}
    for name, (shape, kind) in shapes.items():
        fill = torch.ones if name.endswith("attention_mask") else torch.zeros
        made[name] = fill(shape, dtype=torch.float32 if kind == "float" else torch.long)
        if name.endswith("attention_mask"):
            # One padded position: a real batch has some, and with them attention builds its mask (a batch
            # without any can skip it, which fake tensors cannot tell): the larger of the two.
            made[name][(-1,) * len(shape)] = 0
    return made


def _step(method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
          update: bool) -> None:
    loss = method.loss(model, batch)
    loss.backward()
    if update:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------ the levers


def enable_gradient_checkpointing(model: torch.nn.Module, backbone: str) -> None:
    """transformers' gradient checkpointing, non-reentrant (no inputs that require grad needed, so it
    works under any method, a k-bit base and peft's k-bit preparation included); one line where the
    architecture has none."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"backbone {backbone} ({type(model).__name__}) does not support gradient checkpointing",
                          "drop gradient_checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class KbitShapedLinear(torch.nn.Module):
    """A frozen linear layer in bitsandbytes' storage: NF4 with double quantization (two weights a byte,
    an 8-bit absmax per 64 weights, a float32 scale per 256 absmax) or LLM.int8 (a byte a weight, a
    float32 scale per output row). Forward and backward dequantize into a temporary of the compute
    dtype, as bitsandbytes' matmul does for batches; the output in the input's dtype."""

    def __init__(self, linear: torch.nn.Linear, bits: int, compute_dtype: torch.dtype) -> None:
        super().__init__()
        out_features, in_features = linear.weight.shape
        weights, device = out_features * in_features, linear.weight.device
        self.shape, self.compute_dtype = (out_features, in_features), compute_dtype
        if bits == 4:
            blocks = math.ceil(weights / 64)
            self.register_buffer("quantized", torch.empty(math.ceil(weights / 2), dtype=torch.uint8, device=device))
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device=device))
            self.register_buffer("absmax_scale", torch.empty(math.ceil(blocks / 256), dtype=torch.float32,
                                                             device=device))
        else:
            self.register_buffer("quantized", torch.empty(weights, dtype=torch.int8, device=device))
            self.register_buffer("row_scale", torch.empty(out_features, dtype=torch.float32, device=device))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _DequantizedMatmul.apply(x.to(self.compute_dtype), self.quantized, self.shape, self.compute_dtype)
        out = out + self.bias.to(out.dtype) if self.bias is not None else out
        return out.to(x.dtype)  # as bitsandbytes' Linear4bit / Linear8bitLt return it


class _DequantizedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, quantized, shape, dtype):
        ctx.shape, ctx.dtype, ctx.device = shape, dtype, quantized.device
        return x @ torch.zeros(shape, dtype=dtype, device=quantized.device).t()

    @staticmethod
    def backward(ctx, grad):
        return grad @ torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device), None, None, None


def quantize_shaped(model: torch.nn.Module, bits: int, compute_dtype: torch.dtype) -> None:
    """What loading the base in ``bits`` and peft's k-bit preparation make of it: every frozen linear
    layer but the output layer in k bits, every other parameter in float32."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child is not output and not child.weight.requires_grad:
                setattr(module, name, KbitShapedLinear(child, bits, compute_dtype))
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)


# ------------------------------------------------------------------ planning


def described(prediction: MemoryPrediction) -> list[str]:
    """The prediction in lines for a dry run."""
    t, e = prediction.train, prediction.evaluation
    return [f"predicted peak memory ({prediction.device}, batch {prediction.batch_size} x {prediction.sequence_length} "
            f"tokens, stage {prediction.stage}): training {t.peak_bytes / GB:.2f} GB = weights {t.weights / GB:.2f} "
            f"+ gradients {t.gradients / GB:.2f} + optimizer state {t.optimizer / GB:.2f} + activations "
            f"{t.activations / GB:.2f}; evaluation (batch {prediction.eval_batch_size}) {e.peak_bytes / GB:.2f} GB",
            f"  ({prediction.note})"]


def shown(nbytes: int) -> str:
    return f"{nbytes / GB:.2f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.2f} MB"


def peak_bytes(prediction: MemoryPrediction) -> int:
    return max(prediction.train.peak_bytes, prediction.evaluation.peak_bytes)


def fitted(resolved: Resolved, device_type: str = "cuda") -> tuple[Resolved, MemoryPrediction]:
    """The run and its prediction; with ``fit_memory=accumulate`` and a prediction above ``gpu_memory_gb``,
    the micro-batch halved and the accumulation steps doubled (the effective batch kept) until it fits."""
    train = resolved.spec.train
    prediction = predict(resolved, device_type)
    while not fits(prediction, train) and train.fit_memory == "accumulate":
        limit = train.gpu_memory_gb * GB
        if prediction.train.peak_bytes > limit and train.batch_size % 2 == 0:
            more = {} if train.effective_batch_size else {"grad_accum_steps": train.grad_accum_steps * 2}
            train = dataclasses.replace(train, batch_size=train.batch_size // 2, **more)
        elif prediction.evaluation.peak_bytes > limit and train.eval_batch_size > 1:
            train = dataclasses.replace(train, eval_batch_size=train.eval_batch_size // 2)
        else:
            break
        resolved = dataclasses.replace(resolved, spec=dataclasses.replace(resolved.spec, train=train))
        prediction = predict(resolved, device_type)
    return resolved, prediction


def fits(prediction: MemoryPrediction, train: TrainConfig) -> bool:
    return train.gpu_memory_gb is None or peak_bytes(prediction) <= train.gpu_memory_gb * GB


def fit_to_memory(resolved: Resolved, device_type: str = "cuda") -> tuple[Resolved, MemoryPrediction]:
    """``fitted``, or a ConfigError in one line where the run does not fit ``gpu_memory_gb``."""
    resolved, prediction = fitted(resolved, device_type)
    train = resolved.spec.train
    if not fits(prediction, train):
        spec = resolved.spec
        raise ConfigError(f"{spec.method} on {spec.task} / {spec.backbone} is predicted to need "
                          f"{shown(peak_bytes(prediction))} at batch {train.batch_size} (evaluation batch "
                          f"{train.eval_batch_size}), above gpu_memory_gb="
                          f"{train.gpu_memory_gb:g}", FIT_HINT)
    return resolved, prediction


FIT_HINT = ("lower batch_size or max_length, set gradient_checkpointing=true or optimizer=adamw8bit, or "
            "fit_memory=accumulate")


def for_record(resolved: Resolved, device: torch.device, progress) -> MemoryPrediction | None:
    """The prediction a run records beside what it measures: on CUDA, or where memory was asked about
    (gpu_memory_gb, memory_trace). A method whose step cannot be traced on fake tensors is logged, not
    fatal. The random state is left as it was: the run's seed governs its initialisation."""
    train = resolved.spec.train
    if device.type != "cuda" and train.gpu_memory_gb is None and not train.memory_trace:
        return None
    with torch.random.fork_rng(devices=[]):
        try:
            return predict(resolved, device.type)
        except Exception as exc:  # noqa: BLE001 - a prediction is an addition to the run, never its end
            progress.log(f"memory prediction unavailable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
            return None
