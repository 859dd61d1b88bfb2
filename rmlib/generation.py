"""Sampling responses from a causal LM, for checking what a (reward-trained) language model generates.

:func:`sample_responses` draws one response per prompt from pi(. | x) by ancestral sampling at a given
temperature (the paper: temperature 1, one sample per prompt, Appendix D.1): at every step the next token
is drawn from softmax(logits / temperature) over the *whole* vocabulary -- no top-k, no top-p, no
repetition penalty -- so the samples follow exactly the distribution whose log-probabilities the IM-RM's
reward (Eq. 2) is built from.

The loop is written out (prefill, then one token at a time with the KV cache) rather than delegated to
``model.generate``, so that nothing from a model's stored generation config can change the distribution,
and positions come from the attention mask exactly as in :mod:`rmlib.batching` (left padding is harmless).

Seeding: prompt ``i`` of the input list draws its tokens from its own ``torch.Generator`` seeded with
``(seed, i)``, so a prompt's sample does not depend on the batch size or on which prompts share its batch
(up to floating-point noise of padded batches).
"""

from __future__ import annotations

import torch

from .batching import collate
from .formatting import Encoded
from .models import eval_mode

END_OF_TURN_TOKENS = ("[EOS]", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>")


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end a response: the tokenizer's EOS and any end-of-turn marker it knows
    (the paper template's ``[EOS]``, ChatML's ``<|im_end|>``, Llama-3's ``<|eot_id|>``, Gemma's
    ``<end_of_turn>``)."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@torch.no_grad()
def sample_token_ids(lm, prompts: list[Encoded], pad_id: int, stop_ids, max_new_tokens: int,
                     temperature: float = 1.0, seed: int = 0, batch_size: int = 16) -> list[list[int]]:
    """Sampled response token ids per prompt, cut before the first stop token (which is not included).

    A response that reaches ``max_new_tokens`` without a stop token is returned as it is (truncated)."""
    if not prompts:
        return []
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (sampling), got {temperature!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    stop = {int(t) for t in stop_ids}
    if not stop:
        raise ValueError("need at least one stop token id")
    device = next(lm.parameters()).device
    with eval_mode(lm):
        results: list[list[int]] = [[] for _ in prompts]
        for start in range(0, len(prompts), batch_size):
            index = list(range(start, min(start + batch_size, len(prompts))))
            generators = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in index]
            batch = collate([prompts[i] for i in index], pad_id, padding_side="left").to(device)
            attention = batch.attention_mask
            positions = batch.position_ids
            out = lm(input_ids=batch.input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
            done = torch.zeros(len(index), dtype=torch.bool)
            for _ in range(max_new_tokens):
                probs = torch.softmax(out.logits[:, -1].float().cpu() / temperature, dim=-1)
                tokens = torch.stack([torch.multinomial(probs[j], 1, generator=g)[0]
                                      for j, g in enumerate(generators)])
                for j, token in enumerate(tokens.tolist()):
                    if not done[j]:
                        if token in stop:
                            done[j] = True
                        else:
                            results[index[j]].append(token)
                if bool(done.all()):
                    break
                tokens = torch.where(done, torch.full_like(tokens, pad_id), tokens)
                attention = torch.cat([attention, (~done).long().to(device)[:, None]], dim=1)
                positions = positions[:, -1:] + 1
                out = lm(input_ids=tokens.to(device)[:, None], attention_mask=attention, position_ids=positions,
                         past_key_values=out.past_key_values, use_cache=True)
    return results


def sample_responses(lm, tokenizer, prompts: list[Encoded], max_new_tokens: int, temperature: float = 1.0,
                     seed: int = 0, batch_size: int = 16, stop_ids=None) -> list[str]:
    """One sampled response per prompt, decoded to text (special tokens such as ``[sep]`` kept; the stop
    token itself removed). ``prompts`` are encoded prompts, e.g. ``ChatFormatter.encode_prompt(x)``."""
    stop_ids = stop_token_ids(tokenizer) if stop_ids is None else stop_ids
    ids = sample_token_ids(lm, prompts, tokenizer.pad_token_id, stop_ids, max_new_tokens, temperature, seed,
                           batch_size)
    return [tokenizer.decode(seq, skip_special_tokens=False, clean_up_tokenization_spaces=False) for seq in ids]
