"""Padding a list of :class:`~rmlib.formatting.Encoded` sequences into model inputs.

Position ids are computed from the attention mask (``cumsum - 1``), so a sequence gets the same
positions whether it is padded on the left, on the right, or not at all: its reward does not depend
on the batch it sits in (tested to 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .formatting import Encoded


@dataclass
class Batch:
    input_ids: torch.Tensor       # [N, T] long
    attention_mask: torch.Tensor  # [N, T] long, 1 on real tokens
    position_ids: torch.Tensor    # [N, T] long
    response_mask: torch.Tensor   # [N, T] bool, True on response tokens
    last_index: torch.Tensor      # [N] index of the last real token

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.response_mask, self.last_index)))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(sequences: list[Encoded], pad_id: int, padding_side: str = "right") -> Batch:
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(s) for s in sequences)
    n = len(sequences)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        offset = width - len(seq) if padding_side == "left" else 0
        input_ids[i, offset:offset + len(seq)] = torch.tensor(seq.input_ids, dtype=torch.long)
        attention_mask[i, offset:offset + len(seq)] = 1
        response_mask[i, offset + seq.response_start:offset + len(seq)] = True
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    last_index = width - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)
    return Batch(input_ids, attention_mask, position_ids, response_mask, last_index)
