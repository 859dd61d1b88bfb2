"""Per-token log-probability changes of an IM-RM (Eq. 2), the view behind Section 5.1's explanation:

    r(x, y) = beta * sum_k [ln pi_theta(y_k | x, y_<k) - ln pi_ref(y_k | x, y_<k)],

so the reward of a response is beta times the sum of its tokens' changes. Used by notebook 03's token view
and by the score panel (:mod:`rmlib.widgets.score_panel`).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def token_logprob_changes(trained_lm, initial_lm, rm, prompt: str, response: str) -> list[dict]:
    """Per response token y_k: ln pi_theta(y_k|x,y_<k), ln pi_ref(y_k|x,y_<k) and their difference.

    ``rm`` provides the encoding (the IM-RM's chat format). beta times the summed difference is the
    IM-RM reward (Eq. 2)."""
    from ..rewards import response_token_logprobs
    from ..models import eval_mode

    encoded = rm.encode(prompt, response)
    batch = rm.collate([encoded])
    logps = {}
    for name, lm in (("trained", trained_lm), ("initial", initial_lm)):
        with eval_mode(lm):
            device = next(lm.parameters()).device
            values, _ = response_token_logprobs(lm, batch.to(device))
            logps[name] = values.float().cpu().tolist()
    tokens = [rm.tokenizer.decode([t]) for t in encoded.response_ids]
    return [{"position": k, "token": tok, "logp_trained": a, "logp_initial": b, "change": a - b}
            for k, (tok, a, b) in enumerate(zip(tokens, logps["trained"], logps["initial"]))]
