"""Padding a list of :class:`~rmlib.formatting.Encoded` sequences into model inputs.

Position ids are computed from the attention mask (``cumsum - 1``), so a sequence gets the same
positions whether it is padded on the left, on the right, or not at all: its reward does not depend
on the batch it sits in (tested to 1e-5).

:func:`collate_pairs` (training) also packs each preference pair into one row that holds their shared
prefix (the prompt) once: ``[shared | chosen tail | rejected tail]``, with an attention mask under which
a tail sees the shared part and itself only, and position ids that restart after the shared part. Every
token then has exactly the context, positions and hence hidden states it has alone (causal attention:
the prompt's states never depend on the response), so rewards and gradients are those of the plain
batch, with the prompt's forward and backward done once instead of twice and no padding between the
two responses. ``Batch.packed`` carries this layout; the plain fields stay as they are.

An IM-RM's batch also carries the reference log-probs ln pi_ref(y|x) of its sequences (``Batch.ref_logps``,
data computed once with the initial model, :func:`rmlib.scoring.reference_logps`), which Eq. 2 subtracts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .formatting import Encoded


@dataclass
class PackedPairs:
    """Pairs ``(chosen_i, rejected_i)`` packed one per row, their common prefix held once (see module doc)."""

    input_ids: torch.Tensor       # [n, W] long
    attention_mask: torch.Tensor  # [n, 1, W, W] bool, True where query (dim 2) may attend key (dim 3)
    position_ids: torch.Tensor    # [n, W] long
    rows: torch.Tensor            # [2n, T] long: packed row of each position of the plain [2n, T] batch
    cols: torch.Tensor            # [2n, T] long: packed column of each position of the plain batch

    def to(self, device) -> "PackedPairs":
        return PackedPairs(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                                     self.rows, self.cols)))


@dataclass
class Batch:
    input_ids: torch.Tensor       # [N, T] long
    attention_mask: torch.Tensor  # [N, T] long, 1 on real tokens
    position_ids: torch.Tensor    # [N, T] long
    response_mask: torch.Tensor   # [N, T] bool, True on response tokens
    last_index: torch.Tensor      # [N] index of the last real token
    packed: PackedPairs | None = None  # set by collate_pairs: the same sequences, prefix-shared
    ref_logps: torch.Tensor | None = None  # [N] fp32 ln pi_ref(y|x) of each sequence (IM-RM, Eq. 2), if given

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                               self.response_mask, self.last_index)),
                     packed=None if self.packed is None else self.packed.to(device),
                     ref_logps=None if self.ref_logps is None else self.ref_logps.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(sequences: list[Encoded], pad_id: int, padding_side: str = "right",
            ref_logps: torch.Tensor | None = None) -> Batch:
    """Pad ``sequences`` into one batch; ``ref_logps`` ([N], in the same order) is carried as is."""
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
    return Batch(input_ids, attention_mask, position_ids, response_mask, last_index, ref_logps=ref_logps)


def shared_prefix_length(a: Encoded, b: Encoded) -> int:
    """Number of leading token ids that two sequences have in common."""
    n = 0
    for x, y in zip(a.input_ids, b.input_ids):
        if x != y:
            break
        n += 1
    return n


def packed_length(chosen: Encoded, rejected: Encoded) -> int:
    """Length of the pair's row in :func:`collate_pairs`' packed layout: both sequences, their shared
    prefix once."""
    return len(chosen) + len(rejected) - shared_prefix_length(chosen, rejected)


def padded_tokens(lengths: list[int]) -> int:
    """Token positions (real and padding) of a right-padded batch of rows of these lengths: rows x the
    longest. For the packed lengths of some pairs (:func:`packed_length`), exactly the size of the
    ``input_ids`` that :func:`collate_pairs` packs them into, the batch the forward pass runs on (tested)."""
    return len(lengths) * max(lengths, default=0)


def micro_batches(lengths: list[int], max_pairs: int, max_tokens: int | None = None) -> list[list[int]]:
    """Split the items ``0..len(lengths)-1``, in their order, into consecutive micro-batches.

    Guaranteed: every index occurs exactly once, in the order given; a micro-batch holds at most
    ``max_pairs`` items; with ``max_tokens``, its :func:`padded_tokens` (len x its longest length) is at
    most ``max_tokens``, except for a single item longer than that, which forms a micro-batch of its own
    (nothing is dropped). Greedy: an item joins the current micro-batch if both bounds still hold, else it
    opens the next one. Without ``max_tokens``: fixed chunks of ``max_pairs``. Items sorted by length
    give the least padding."""
    if max_pairs < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"need max_pairs >= 1 and max_tokens None or >= 1, got {max_pairs}, {max_tokens}")
    groups, longest = [], 0
    for i, length in enumerate(lengths):
        if groups and len(groups[-1]) < max_pairs and \
                (max_tokens is None or (len(groups[-1]) + 1) * max(longest, length) <= max_tokens):
            groups[-1].append(i)
            longest = max(longest, length)
        else:
            groups.append([i])
            longest = length
    return groups


def pair_for_packing(sequences: list[Encoded]) -> list[tuple[int, int]]:
    """Indices of ``sequences`` two by two, to be run through :func:`collate_pairs` (evaluation, caching).

    Sequences are ordered by prompt, so two responses to the same prompt land in one pair and their
    prompt is computed once; the pairs are then ordered by packed length, so a batch of pairs carries
    little padding. With an odd count, the last sequence is paired with itself: its copy is all shared
    prefix and costs nothing."""
    order = sorted(range(len(sequences)),
                   key=lambda i: (sequences[i].input_ids[:sequences[i].response_start], len(sequences[i])))
    pairs = [(order[k], order[min(k + 1, len(order) - 1)]) for k in range(0, len(order), 2)]

    return sorted(pairs, key=lambda pair: packed_length(sequences[pair[0]], sequences[pair[1]]))


def collate_pairs(chosen: list[Encoded], rejected: list[Encoded], pad_id: int,
                  ref_logps: torch.Tensor | None = None) -> Batch:
    """The right-padded batch ``[chosen_1..chosen_n, rejected_1..rejected_n]`` plus its packed layout
    (``ref_logps``: [2n] in that same order, carried as is).

    Row i of the packing is ``chosen_i[:L] + chosen_i[L:] + rejected_i[L:]`` with L the pair's shared
    prefix length; tail tokens attend the shared part and their own tail (causally), padding attends
    only itself (so no attention row is empty)."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"need equal, non-zero numbers of chosen and rejected sequences "
                         f"({len(chosen)} vs {len(rejected)})")
    plain = collate(list(chosen) + list(rejected), pad_id, "right")
    n, width = len(chosen), plain.input_ids.shape[1]
    shared = [shared_prefix_length(c, r) for c, r in zip(chosen, rejected)]
    packed_width = max(len(c) + len(r) - s for c, r, s in zip(chosen, rejected, shared))
    input_ids = torch.full((n, packed_width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, packed_width), dtype=torch.long)
    segment = torch.full((n, packed_width), 3, dtype=torch.long)  # 0 shared, 1 chosen tail, 2 rejected tail, 3 pad
    rows = torch.arange(n).repeat(2)[:, None].expand(2 * n, width).clone()
    cols = torch.zeros((2 * n, width), dtype=torch.long)
    for i, (c, r, s) in enumerate(zip(chosen, rejected, shared)):
        c_end = len(c)
        r_end = c_end + len(r) - s
        input_ids[i, :c_end] = torch.tensor(c.input_ids, dtype=torch.long)
        input_ids[i, c_end:r_end] = torch.tensor(r.input_ids[s:], dtype=torch.long)
        position_ids[i, :c_end] = torch.arange(c_end)
        position_ids[i, c_end:r_end] = torch.arange(s, len(r))
        segment[i, :s], segment[i, s:c_end], segment[i, c_end:r_end] = 0, 1, 2
        cols[i, :len(c)] = torch.arange(len(c))
        cols[n + i, :s] = torch.arange(s)
        cols[n + i, s:len(r)] = torch.arange(c_end, r_end)
    index = torch.arange(packed_width)
    causal = index[None, :] <= index[:, None]                               # [W(query), W(key)]
    key_seg, query_seg = segment[:, None, :], segment[:, :, None]
    visible = (key_seg == 0) | ((key_seg == query_seg) & (key_seg != 3))
    attention_mask = (causal & visible) | torch.eye(packed_width, dtype=torch.bool)
    packed = PackedPairs(input_ids, attention_mask[:, None], position_ids, rows, cols)
    return Batch(plain.input_ids, plain.attention_mask, plain.position_ids, plain.response_mask,
                 plain.last_index, packed, ref_logps)
