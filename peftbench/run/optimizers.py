"""The optimizer a run trains with (``--set optimizer=``): torch's AdamW, or bitsandbytes' 8-bit and
paged AdamW (QLoRA's choice for fitting a large model on one GPU), and the same state's shape on fake
tensors for memory predictions (bitsandbytes' kernels do not run on them).

The 8-bit optimizers keep both moments in 8 bits with one float32 scale per block of 256 values
(``absmax``) and a shared 256-entry quantile map; tensors under 4,096 values keep 32-bit moments
(bitsandbytes' ``min_8bit_size``). Paged optimizers put their state in CUDA unified memory, which the
driver pages out to host memory when the GPU runs short: CUDA only.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from ..errors import ConfigError

BNB_CLASSES = {"adamw8bit": "AdamW8bit", "paged_adamw8bit": "PagedAdamW8bit", "paged_adamw32bit": "PagedAdamW32bit"}
BLOCK = 256  # values per absmax scale in bitsandbytes' blockwise 8-bit optimizer state
MIN_8BIT_SIZE = 4096


def check_optimizer(name: str, device_type: str) -> None:
    """Refuse, in one line, an optimizer that cannot run here (before any training)."""
    if name == "adamw":
        return
    from ..components.installed import install_hint, is_installed

    if not is_installed("bitsandbytes"):
        raise ConfigError(f"optimizer={name} needs bitsandbytes, which is not installed",
                          f"{install_hint(['bitsandbytes'])}, or use optimizer=adamw")
    if name.startswith("paged_") and device_type != "cuda":
        raise ConfigError(f"optimizer={name} pages its state between a CUDA GPU and host memory; this run is on "
                          f"{device_type}", "use optimizer=adamw8bit (8-bit state, any device) or adamw")


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float,
                   shaped: bool = False) -> torch.optim.Optimizer:
    """The run's optimizer over ``params``; ``shaped``: a stand-in with bitsandbytes' state shapes."""
    if name == "adamw":
        # One fused kernel per step instead of a loop over tensors (what HF Trainer uses by default): on
        # full fine-tuning of MiniLM on 2 CPU cores the loop cost ~10% of a step (benchmarks/vs_trainer.py).
        fused = bool(params) and params[0].device.type in ("cpu", "cuda") and all(p.is_floating_point()
                                                                                for p in params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if shaped:
        return ShapedBnbAdamW(params, lr=lr, weight_decay=weight_decay, eight_bit=name.endswith("8bit"))
    import bitsandbytes

    return getattr(bitsandbytes.optim, BNB_CLASSES[name])(params, lr=lr, weight_decay=weight_decay)


class ShapedBnbAdamW(torch.optim.Optimizer):
    """bitsandbytes' AdamW state, tensor for tensor, with a plain update: what a memory prediction traces."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, eight_bit: bool) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.eight_bit = eight_bit
        self.qmap: torch.Tensor | None = None

    def _new_state(self, param: torch.nn.Parameter) -> dict[str, Any]:
        if not self.eight_bit or param.numel() < MIN_8BIT_SIZE:
            return {"state1": torch.zeros_like(param, dtype=torch.float32),
                    "state2": torch.zeros_like(param, dtype=torch.float32)}
        if self.qmap is None:
            self.qmap = torch.zeros(256, dtype=torch.float32, device=param.device)
        blocks = -(-param.numel() // BLOCK)
        return {"state1": torch.zeros_like(param, dtype=torch.uint8), "qmap1": self.qmap,
                "state2": torch.zeros_like(param, dtype=torch.uint8), "qmap2": self.qmap,
                "absmax1": torch.zeros(blocks, dtype=torch.float32, device=param.device),
                "absmax2": torch.zeros(blocks, dtype=torch.float32, device=param.device)}

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param not in self.state or not self.state[param]:
                    self.state[param] = self._new_state(param)
                param.add_(param.grad, alpha=-group["lr"])
