"""The model a multi-task run trains: the main task model plus auxiliary heads on its encoder.

Its own module so that listing the multi-task methods does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from .auxiliary import Auxiliary

AUXILIARY_BATCH_FIELDS = ("ngram_tags", "mask_probs", "mlm_input_ids", "mlm_labels")


class MultiTaskModel(nn.Module):
    """The main model plus auxiliary heads on its encoder. Evaluation and inference see the main
    model only; in training, a batch with auxiliary targets adds the weighted auxiliary loss."""

    def __init__(self, main: nn.Module, auxiliary: Auxiliary, head: nn.Module | None, weight: float) -> None:
        super().__init__()
        self.main = main  # registered first: shared parameters are named (and counted) as the main model's
        self.aux = nn.ModuleDict({auxiliary.name: head} if head is not None else {})
        self.auxiliary = auxiliary
        self.weight = weight

    def forward(self, **batch: Any) -> Any:
        targets = {k: batch.pop(k) for k in AUXILIARY_BATCH_FIELDS if k in batch}
        if not (self.training and targets and self.aux):
            return self.main(**batch)
        hidden = self.auxiliary.needs_hidden_states
        outputs = self.main(**batch, **({"output_hidden_states": True} if hidden else {}))
        auxiliary_loss = self.auxiliary.loss(self.aux[self.auxiliary.name], outputs, {**batch, **targets})
        outputs.loss = outputs.loss + self.weight * auxiliary_loss
        if hidden:
            outputs.hidden_states = None  # not needed any more; do not keep them alive
        return outputs
