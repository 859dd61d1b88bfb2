"""The core against naive reference computations (tiny random Llama; one test on the real SmolLM2)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rmlib.batching import collate
from rmlib.metrics import accuracy, normalized_margin, win_rate
from rmlib.data import EvalSet
from rmlib.experiment import run_experiment
from rmlib.formatting import PAPER_TEMPLATE_TOKENS, ChatFormatter, add_special_tokens
from rmlib.models import eval_mode, load_model
from rmlib.results import results_table
from rmlib.rewards import (ExplicitRM, GenerativeRM, ImplicitRM, MissingReference, gather_logprobs,
                           sequence_logprobs)
from rmlib.runconfig import RunConfig
from rmlib.scoring import encode_pairs, reference_logps, score
from rmlib.training import train

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris is the capital of France.",
     "rejected": "I think it is Lyon, but I am not sure at all."},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
    {"prompt": "Add 2 and 3.", "chosen": "2 + 3 = 5", "rejected": "2 + 3 = 6, obviously, since addition is hard."},
]


def naive_response_logprob(lm, ids, response_start):
    """sum_k ln pi(y_k | x, y_<k) from a full, unpadded forward pass and a full log_softmax."""
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([ids])).logits[0].float()
    logp = F.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(response_start, len(ids)))


def test_implicit_reward_matches_token_by_token_sum(fresh_tiny):
    lm, tok = fresh_tiny
    rm = ImplicitRM(lm, tok, beta=0.01)
    seqs = [rm.encode(p["prompt"], p["chosen"]) for p in PAIRS]
    ref_logps = reference_logps(rm, seqs)
    ref = [naive_response_logprob(lm, s.input_ids, s.response_start) for s in seqs]
    np.testing.assert_allclose([ref_logps[s] for s in seqs], ref, rtol=1e-5, atol=1e-4)
    with torch.no_grad():  # move the policy away from the reference, then compare rewards
        lm.get_output_embeddings().weight.add_(0.05 * torch.randn_like(lm.get_output_embeddings().weight))
    policy = [naive_response_logprob(lm, s.input_ids, s.response_start) for s in seqs]
    expected = [0.01 * (p - r) for p, r in zip(policy, ref)]
    np.testing.assert_allclose(score(rm, seqs, ref_logps=ref_logps).numpy(), expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(expected, 0)


def test_reference_logps_attached_to_the_data_equal_a_naive_loop(fresh_tiny):
    """ln pi_ref(y|x) computed once per data set (packed batches, duplicates once) equals, sequence by
    sequence, a full unpadded forward pass; the batch carries them in its own order, and the reward of
    the untrained model is then exactly 0 (Eq. 2 at pi_theta = pi_ref)."""
    lm, tok = fresh_tiny
    rm = ImplicitRM(lm, tok, beta=0.5)
    chosen, rejected = encode_pairs(rm, PAIRS)
    data = chosen + rejected + chosen[:1]  # a repeated sequence is computed once
    ref_logps = reference_logps(rm, data, batch_size=2)
    assert set(ref_logps) == set(data) and len(ref_logps) == 6
    for s in data:
        assert ref_logps[s] == pytest.approx(naive_response_logprob(lm, s.input_ids, s.response_start), abs=1e-4)
    batch = rm.collate_pairs(chosen, rejected, ref_logps)
    assert batch.ref_logps.tolist() == [ref_logps[s] for s in chosen + rejected]
    assert float(score(rm, data, ref_logps=ref_logps).abs().max()) < 1e-5


def test_missing_reference_is_refused_before_any_work(fresh_tiny, monkeypatch):
    """An evaluation set without reference log-probs is refused by train() before the first step, and by
    score() before any forward pass, naming how many are missing."""
    lm, tok = fresh_tiny
    rm = ImplicitRM(lm, tok, beta=0.5)
    chosen, rejected = encode_pairs(rm, PAIRS[:2])
    heldout, _ = encode_pairs(rm, PAIRS[2:])
    ref_logps = reference_logps(rm, chosen + rejected)  # the evaluation set was forgotten
    forwards = []
    monkeypatch.setattr(ImplicitRM, "forward", lambda self, batch: forwards.append(1))
    with pytest.raises(MissingReference, match="1 of the 5 training and evaluation sequences"):
        train(rm, chosen, rejected, RunConfig(epochs=1, lr=1e-3, batch_size=2, micro_batch_size=2,
                                                progress=False), reference_sequences=heldout, ref_logps=ref_logps)
    with pytest.raises(MissingReference, match="1 of 1 sequences have no reference log-prob"):
        score(rm, heldout, ref_logps=ref_logps)
    with pytest.raises(MissingReference, match="2 of 2"):
        score(rm, chosen[:1] + heldout)  # no ref_logps at all: all of them are missing
    assert forwards == []


@pytest.mark.parametrize("variant, scale", [("no_ref", 0.01), ("no_ref_unscaled", 1.0)])
def test_no_ref_variants_are_scaled_log_likelihood(tiny, variant, scale):
    """"no_ref": beta * ln pi(y|x) (the official code of Figure 7); "no_ref_unscaled": ln pi(y|x) (the text)."""
    lm, tok = tiny
    rm = ImplicitRM(lm, tok, beta=0.01, variant=variant)
    s = rm.encode(PAIRS[0]["prompt"], PAIRS[0]["chosen"])
    expected = scale * naive_response_logprob(lm, s.input_ids, s.response_start)
    assert float(score(rm, [s])[0]) == pytest.approx(expected, rel=1e-5)


def test_gather_logprobs_equals_log_softmax(tiny):
    lm, _ = tiny
    hidden = torch.randn(7, lm.config.hidden_size)
    targets = torch.randint(0, lm.config.vocab_size, (7,))
    with torch.no_grad():
        expected = F.log_softmax(lm.get_output_embeddings()(hidden).float(), -1).gather(1, targets[:, None]).squeeze(1)
        got = gather_logprobs(lm, hidden, targets, chunk=3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["last", "mean"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_explicit_reward_independent_of_batch_and_padding(tiny, variant, side):
    lm, tok = tiny
    rm = ExplicitRM(lm, tok, variant=variant).eval()
    seqs = [rm.encode(p["prompt"], r) for p in PAIRS for r in (p["chosen"], p["rejected"])]
    assert len({len(s) for s in seqs}) > 1  # padding really happens
    with torch.no_grad():
        alone = torch.stack([rm(collate([s], tok.pad_token_id)) for s in seqs]).squeeze(-1)
        batched = rm(collate(seqs, tok.pad_token_id, padding_side=side))
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_implicit_reward_independent_of_padding(tiny):
    lm, tok = tiny
    seqs = [ChatFormatter(tok).encode(p["prompt"], p["rejected"]) for p in PAIRS]
    with torch.no_grad():
        alone = torch.cat([sequence_logprobs(lm, collate([s], tok.pad_token_id)) for s in seqs])
        for side in ("left", "right"):
            torch.testing.assert_close(sequence_logprobs(lm, collate(seqs, tok.pad_token_id, side)), alone,
                                       rtol=0, atol=1e-4)


def test_chat_template_response_span_is_exact(tiny):
    _, tok = tiny
    enc = ChatFormatter(tok).encode("Question?", "The answer.")
    assert tok.decode(enc.response_ids) == "The answer.<|im_end|>\n"
    prompt_text = tok.decode(enc.input_ids[:enc.response_start])
    assert prompt_text.endswith("<|im_start|>assistant\n") and "The answer" not in prompt_text
    assert enc.input_ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 3  # system, user, assistant turns


def test_paper_template_with_added_tokens_and_single_bos(fresh_tiny):
    lm, tok = fresh_tiny
    with pytest.raises(ValueError, match="special tokens"):
        ChatFormatter(tok, use_chat_template=False)
    old_vocab = lm.get_input_embeddings().weight.shape[0]
    add_special_tokens(lm, tok, PAPER_TEMPLATE_TOKENS)
    assert lm.get_input_embeddings().weight.shape[0] == old_vocab + 3
    tok.add_bos_token = True  # a Llama-style tokenizer that adds BOS: it must appear exactly once
    enc = ChatFormatter(tok, use_chat_template=False).encode("Hi", "Hello there")
    ids = list(enc.input_ids)
    assert tok.convert_ids_to_tokens(ids[enc.response_start:]) [-1] == "[EOS]"
    assert tok.decode(enc.response_ids) == "Hello there[EOS]"
    assert tok.decode(ids[:enc.response_start]).endswith("[USER]Hi[ASSISTANT]")
    assert ids.count(tok.bos_token_id) <= 1


def test_loss_and_gradient_match_hand_computation(fresh_tiny):
    lm, tok = fresh_tiny
    rm = ExplicitRM(lm, tok, seed=3)
    chosen, rejected = encode_pairs(rm, PAIRS[:2])
    batch = collate(chosen + rejected, tok.pad_token_id)
    with torch.no_grad():
        h = rm.features(batch).double()
    u = rm.head.weight.detach().double()[0]
    delta = (h[:2] - h[2:]) @ u
    hand_loss = float(torch.log1p(torch.exp(-delta)).mean())
    hand_grad = (-(torch.sigmoid(-delta))[:, None] * (h[:2] - h[2:])).mean(0)  # d loss / d u
    loss, rc, rr = rm.loss(rm(batch))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(hand_loss, rel=1e-6)
    torch.testing.assert_close(rm.head.weight.grad[0].double(), hand_grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close((rc - rr).double(), delta, rtol=1e-5, atol=1e-6)


def test_generative_reward_and_loss(tiny):
    lm, tok = tiny
    rm = GenerativeRM(lm, tok)
    s_pos, s_neg = rm.encode("x?", "good"), rm.encode("x?", "bad")
    assert "Verification: Is the answer correct (Yes/No)?" in tok.decode(s_pos.input_ids)
    with torch.no_grad():
        out = rm(collate([s_pos, s_neg], tok.pad_token_id))
        probs = [F.softmax(lm(input_ids=torch.tensor([s.input_ids])).logits[0, -1].float(), -1) for s in (s_pos, s_neg)]
    assert float(rm.rewards_from_outputs(out)[0]) == pytest.approx(float(probs[0][rm.yes_id]), rel=1e-4)
    loss, _, _ = rm.loss(out)
    assert float(loss) == pytest.approx(-(np.log(float(probs[0][rm.yes_id])) + np.log(float(probs[1][rm.no_id]))), rel=1e-4)


def test_accuracy_margin_and_ties():
    assert accuracy([1, 2, 3, 0], [0, 2, 4, 0]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    rc, rr = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    s = np.concatenate([rc, rr]).std()
    assert normalized_margin(rc, rr) == pytest.approx(np.mean([1.0, 2.0]) / s)
    assert normalized_margin([1, 1], [1, 1]) == 0.0
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


def test_win_rate_tie_rule():
    rows = []
    for seed, (ex, im) in enumerate([(0.80, 0.70), (0.700, 0.705), (0.60, 0.70), (0.71, 0.70)]):
        rows += [{"model": "m", "seed": seed, "eval_set": "uf", "rm_type": "ex", "accuracy": ex},
                 {"model": "m", "seed": seed, "eval_set": "uf", "rm_type": "im", "accuracy": im}]
    wr = win_rate(pd.DataFrame(rows))
    # 0.80 vs 0.70: EX; 0.700 vs 0.705: tie; 0.60 vs 0.70: IM; 0.71 vs 0.70: exactly 1% -> tie
    assert (wr["ex_wins"], wr["tie"], wr["im_wins"], wr["n"]) == (25.0, 50.0, 25.0, 4)


def test_training_decreases_loss_and_writes_results(tmp_path):
    rows = PAIRS * 4
    for rm_type in ("ex", "im"):
        run = RunConfig(setting="test", model="tiny-random", rm_type=rm_type, epochs=4, lr=3e-3, batch_size=4,
                        micro_batch_size=2, seed=0, progress=False)
        out = run_experiment(run, rows, {"train": EvalSet(PAIRS, "in-distribution")}, tmp_path)
        epochs = out.record["history"]["epochs"]
        assert epochs[-1]["train_loss"] < epochs[0]["train_loss"], epochs
        assert out.path.exists() and json.loads(out.path.read_text())["run_id"] == out.record["run_id"]
        other = run_experiment(run.replace(extra={"note": "another run"}), rows, {"train": EvalSet(PAIRS)}, tmp_path)
        assert not other.reused and other.record["run_id"] != out.record["run_id"]
        same = run_experiment(run.replace(micro_batch_size=4, eval_batch_size=2), rows,  # execution only
                              {"train": EvalSet(PAIRS, "in-distribution")}, tmp_path)
        assert same.reused and same.record == out.record
    table = results_table(tmp_path, "test")
    assert set(table["rm_type"]) == {"ex", "im"} and len(table) == 4  # 2 types x 2 runs x 1 eval set
    assert table["accuracy"].between(0, 1).all()


def test_after_training_output_is_stored_and_reused_without_retraining(tmp_path):
    config = RunConfig(setting="test", model="tiny-random", rm_type="im", epochs=1, lr=1e-3, batch_size=4,
                       micro_batch_size=4, seed=0, progress=False)
    calls = []

    def after(rm, ref_logps):  # e.g. samples of the IM-RM: needs the trained weights, stored with the run
        calls.append(rm.kind)
        seqs = [rm.encode(p["prompt"], p["chosen"]) for p in PAIRS]  # ln pi_ref of the run's data, as data
        return {"n_parameters": sum(p.numel() for p in rm.parameters()), "kind": rm.kind,
                "ref_logps": [ref_logps[s] for s in seqs]}

    run = lambda: run_experiment(config, PAIRS, {"train": EvalSet(PAIRS)}, tmp_path, after_training=after)
    first = run()
    assert not first.reused and first.record["after_training"]["kind"] == "im" and calls == ["im"]
    assert json.loads(first.path.read_text())["after_training"] == first.record["after_training"]
    again = run()
    assert again.reused and again.record["after_training"] == first.record["after_training"] and calls == ["im"]


def test_eval_mode_restores_the_mode_even_after_an_error():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    for training in (True, False):
        module.train(training)
        with eval_mode(module) as inside:
            assert inside is module and not module.training and not module[1].training
        assert module.training is training and module[1].training is training
    module.train()
    with pytest.raises(KeyError), eval_mode(module):
        raise KeyError("boom")
    assert module.training


def test_train_accuracy_is_definition_1_with_ties_as_half(tiny):
    """The history's train accuracy counts a tie (equal rewards: an EX-RM head of zeros) as 1/2."""
    lm0, tok = tiny
    lm, _ = load_model("tiny-random", dtype="float32", seed=0)
    rm = ExplicitRM(lm, tok, seed=1)
    torch.nn.init.zeros_(rm.head.weight)
    chosen, rejected = encode_pairs(rm, PAIRS)
    history = train(rm, chosen, rejected, RunConfig(epochs=1, lr=1e-12, batch_size=len(PAIRS), micro_batch_size=1,
                                                    max_steps=1, progress=False))
    assert history.steps[0]["accuracy"] == 0.5 and history.epochs[0]["train_accuracy"] == 0.5


def test_gradient_accumulation_is_exact(tiny):
    """One step over 4 pairs gives the same update whether split in micro-batches of 1, 2 or 4."""
    lm0, tok = tiny
    weights = []
    for micro in (1, 2, 4):
        lm, _ = load_model("tiny-random", dtype="float32", seed=0)
        rm = ExplicitRM(lm, tok, seed=1)
        chosen, rejected = encode_pairs(rm, PAIRS + PAIRS[:1])
        train(rm, chosen, rejected, RunConfig(epochs=1, lr=1e-2, batch_size=4, micro_batch_size=micro,
                                              max_steps=1, progress=False))
        weights.append(rm.head.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(weights[0], weights[2], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_real_smollm2(smollm2, tmp_path):
    lm, tok = smollm2
    from rmlib.models import smollm2_folder
    config = json.loads((smollm2_folder() / "config.json").read_text())
    assert "quantization_config" not in config and lm.config.vocab_size == 49152
    rm = ImplicitRM(lm, tok)
    s = rm.encode("What is 2+2?", "4")
    assert tok.decode(s.response_ids) == "4<|im_end|>\n"
    assert reference_logps(rm, [s])[s] == pytest.approx(naive_response_logprob(lm, s.input_ids, s.response_start), rel=1e-4)
    # A real language model: a fluent answer is far likelier than the same words scrambled.
    fluent = rm.encode("What is the capital of France?", "The capital of France is Paris.")
    scrambled = rm.encode("What is the capital of France?", "Paris France capital the is of The.")
    ref_logps = reference_logps(rm, [fluent, scrambled])
    assert ref_logps[fluent] > ref_logps[scrambled] + 5


def test_dated_chat_template_is_deterministic(fresh_tiny):
    """Llama-3.x templates print today's date unless date_string is given; rmlib always gives it."""
    _, tok = fresh_tiny
    tok.chat_template = (
        '{%- if not date_string is defined %}{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}'
        '<|im_start|>system\nToday Date: {{ date_string }}<|im_end|>\n'
        '{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}'
        '{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}')
    enc = ChatFormatter(tok).encode("Hi", "Hello")
    assert "Today Date: 26 Jul 2024" in tok.decode(enc.input_ids)
    assert tok.decode(enc.response_ids) == "Hello<|im_end|>"


def test_paper_model_names_resolve_to_hub_ids(monkeypatch):
    import rmlib.models as models
    seen = []
    monkeypatch.setattr(models, "_from_hub_or_path", lambda cls, name, **kw: seen.append(name))
    models.load_tokenizer("gemma-2-2b-it")
    assert seen == ["google/gemma-2-2b-it"]
