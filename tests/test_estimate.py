"""rmlib.estimate: hand-computed FLOPs and memory of a 2-layer model, the registry against instantiated configs,
the sharding decision for Llama-3.1-8B, plan entries and the report, and the estimate against a measured run."""

import json
import time

import pytest
import torch

from rmlib import estimate as est
from rmlib.estimate import Architecture, DataTokens, Device, estimate_entry, estimate_run, report

# A 2-layer model: embedding 10 x 4 = 40 (tied), 200 decoder parameters.
TOY = Architecture(params=240, layers=2, hidden=4, intermediate=8, attention=4, vocab=10, tied=True, context=64)
SLOW_DEVICE = Device("toy", bf16_tflops=2e-9, fp32_tflops=1e-9, memory_gb=1.0)  # 2000 / 1000 FLOP/s


def toy(rm_type="ex", **kw):
    args = dict(n_pairs=3, epochs=2, mean_tokens=10, max_tokens=12, micro_batch=1, precision="fp32",
                gradient_checkpointing=False, device_name=SLOW_DEVICE, utilisation=0.5, shared_tokens=4)
    args.update(kw)
    return estimate_run(TOY, rm_type, **args)


def test_two_layer_model_by_hand():
    # a pair row: 2 x 10 - 4 = 16 tokens; 2 epochs x 3 pairs = 6 pairs = 96 tokens
    # forward per token: 2 x 200 (decoder) + 2 x 2 layers x 10 positions x 4 (attention) = 560
    ex = toy()
    assert ex.pairs_trained == 6 and ex.tokens_trained == 96
    assert ex.train_flops == 3 * 560 * 96 == 161_280
    assert ex.reference_flops == 0 and ex.eval_flops == 0
    assert ex.gpu_hours == pytest.approx(161_280 / (1000 * 0.5) / 3600)
    # IM-RM: + the output layer over response tokens, 2 x 4 x 10 x (12 / 16 of the row) = 60 per token;
    # the reference: one forward of the 3 training pairs (once, whatever the epochs)
    im = toy("im")
    assert im.train_flops == 3 * 620 * 96 and im.reference_flops == 620 * 3 * 16
    # gradient checkpointing: one more forward of the decoder (no output layer)
    assert toy(gradient_checkpointing=True).train_flops == (3 * 560 + 560) * 96
    # evaluation: one forward of 5 pairs of 8 tokens sharing 4: rows of 12 tokens, attention over 8 positions
    ev = toy(eval_pairs=5, eval_mean_tokens=8)
    assert ev.eval_flops == (400 + 2 * 2 * 8 * 4) * 5 * 12
    # max_steps: 1 step of 2 pairs instead of 6 pairs
    assert toy(max_steps=1, batch_size=2).tokens_trained == 32

    # memory: 16 bytes/parameter; a micro-batch of 1 pair at the longest row 2 x 12 = 24 tokens, fp32:
    # 4 x (6 x 4 + 2 x 4 + 4 x 8) + 8 x 4 = 288 bytes per token and layer
    assert ex.weights_gb * 1e9 == pytest.approx(16 * 240) and ex.autocast_gb == 0
    assert ex.activations_gb * 1e9 == pytest.approx(24 * 288 * 2)
    assert im.activations_gb * 1e9 == pytest.approx(24 * 288 * 2 + 4 * 24 * 10)  # + fp32 logits
    # bf16-mixed: 2-byte activations (2 x 64 + 32 = 160 per token and layer) and a bf16 copy of the decoder
    bf16 = toy(precision="bf16-mixed")
    assert bf16.autocast_gb * 1e9 == pytest.approx(2 * 200) and bf16.activations_gb * 1e9 == pytest.approx(24 * 160 * 2)
    assert bf16.gpu_hours == pytest.approx(161_280 / (2000 * 0.5) / 3600)
    # gradient checkpointing keeps each layer's input (4 x 4 bytes per token) plus one layer
    assert toy(gradient_checkpointing=True).activations_gb * 1e9 == pytest.approx(24 * (4 * 4 * 2 + 288))
    assert ex.gpus == 1 and not ex.sharded and ex.memory_gb == pytest.approx(ex.weights_gb + ex.activations_gb)


def test_bad_inputs_are_refused_with_the_fix():
    with pytest.raises(est.EstimateError, match="no architecture known for model 'gpt-5'.*ARCHITECTURES"):
        estimate_run("gpt-5", "ex", 10, 1, 100, 200)
    with pytest.raises(est.EstimateError, match="unknown device 'tpu'.*h100"):
        estimate_run("pythia-1b", "ex", 10, 1, 100, 200, device_name="tpu")
    with pytest.raises(est.EstimateError, match="mean_tokens <= max_tokens"):
        estimate_run("pythia-1b", "ex", 10, 1, 300, 200)


def test_eight_billion_needs_sharding_on_h100_not_the_one_billion():
    # 16 bytes x 8.03e9 = 128 GB of states before activations: more than one 80 GB H100 (or a 141 GB H200)
    big = estimate_run("llama-3.1-8b-instruct", "im", 2000, 1, 400, 512, micro_batch=4, device_name="h100")
    assert big.weights_gb == pytest.approx(16 * 8_030_261_248 / 1e9)
    assert big.gpus > 1 and big.sharded and big.memory_gb <= 0.9 * 80
    assert big.memory_gb == pytest.approx(big.weights_gb / big.gpus + 8 * est.ARCHITECTURES[
        "llama-3.1-8b-instruct"].body / 32 / 1e9 + big.activations_gb)
    assert estimate_run("llama-3.1-8b-instruct", "im", 2000, 1, 400, 512, micro_batch=4, device_name="h200").sharded
    small = estimate_run("pythia-1b", "im", 2000, 1, 400, 512, micro_batch=4, device_name="h100")
    assert small.gpus == 1 and not small.sharded
    assert big.precision == small.precision == "bf16-mixed"  # auto on these GPUs
    assert big.wall_hours == pytest.approx(big.gpu_hours / big.gpus)
    # long rows: one micro-batch's activations (not sharded) dominate; checkpointing needs fewer GPUs
    long = dict(micro_batch=4, device_name="h100", shared_tokens=111)
    plain = estimate_run("llama-3.1-8b-instruct", "im", 2000, 5, 328, 1104, **long)
    checkpointed = estimate_run("llama-3.1-8b-instruct", "im", 2000, 5, 328, 1104, gradient_checkpointing=True, **long)
    assert "gradient_checkpointing" in plain.notes[0] and not checkpointed.notes
    assert checkpointed.gpus < plain.gpus and checkpointed.train_flops > plain.train_flops


def test_registry_matches_the_instantiated_models():
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from rmlib.models import MODEL_NAMES, load_tokenizer, smollm2_folder, tiny_random_config

    from rmlib.families import FAMILIES

    # the dry run's tiny family models stand in for paper models, whose names a dry-run plan keeps
    assert set(est.ARCHITECTURES) == set(MODEL_NAMES) - set(FAMILIES)
    configs = {"tiny-random": tiny_random_config(len(load_tokenizer("tiny-random"))),
               "smollm2-135m-instruct": AutoConfig.from_pretrained(smollm2_folder()),
               # Llama-3.1-8B-Instruct's config.json (its numbers beside the registry's)
               "llama-3.1-8b-instruct": LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                                    num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                                                    tie_word_embeddings=False)}
    for name, config in configs.items():
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config)
        arch = est.ARCHITECTURES[name]
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        assert (arch.params, arch.layers, arch.hidden, arch.intermediate, arch.attention, arch.vocab, arch.tied) == (
            sum(p.numel() for p in lm.parameters()), config.num_hidden_layers, config.hidden_size,
            config.intermediate_size, config.num_attention_heads * head_dim, config.vocab_size,
            config.tie_word_embeddings), name


def entry(seed=0, rm_type="im", **run):
    return {"notebook": "04", "run_id": f"r{seed}{rm_type}", "task": None, "data": {"source": "ultrafeedback"},
            "run": {"model": "pythia-1b", "rm_type": rm_type, "seed": seed, "epochs": 5, "batch_size": 32, **run},
            "tokens": {"n_pairs": 2000, "mean_tokens": 400, "max_tokens": 512, "shared_tokens": 100,
                       "eval_pairs": 500}}


def test_plan_entries_share_one_reference_pass_in_the_total():
    runs = [estimate_entry(entry(seed)) for seed in (0, 1, 2)] + [estimate_entry(entry(0, "ex"))]
    assert runs[0].reference_key == runs[2].reference_key and runs[3].reference_key is None
    assert runs[0].flops == runs[1].flops  # the seed changes nothing
    frame = report(runs)
    total = frame.iloc[-1]
    assert total["run"] == "total" and total["reference_PF"] == pytest.approx(runs[0].reference_flops / 1e15)
    assert total["train_PF"] == pytest.approx(sum(r.train_flops for r in runs) / 1e15)
    shared_hours = runs[0].reference_flops / (runs[0].peak_tflops * 1e12 * 0.4) / 3600
    assert total["gpu_hours"] == pytest.approx(sum(r.gpu_hours for r in runs) - 2 * shared_hours)
    # other data, another precision: their own reference pass
    other = estimate_entry({**entry(0), "data": {"source": "rewardmath"}})
    fp32 = estimate_entry(entry(0, precision="fp32"))
    assert len({runs[0].reference_key, other.reference_key, fp32.reference_key}) == 3
    # RunConfig fields reach the estimate: micro-batch, checkpointing, max_steps
    assert estimate_entry(entry(0, micro_batch_size=2)).activations_gb < runs[0].activations_gb
    assert estimate_entry(entry(0, gradient_checkpointing=True)).train_flops > runs[0].train_flops
    assert estimate_entry(entry(0, max_steps=10)).pairs_trained == 320


def test_tokens_from_rows_at_four_characters_per_token():
    rows = [{"prompt": "p" * 40, "chosen": "c" * 80, "rejected": "r" * 41}]
    counts = DataTokens.from_rows(rows, eval_rows=rows * 2)
    assert counts == DataTokens(1, (30 + 21) / 2, 30, 10, 2, (30 + 21) / 2)


def test_command_line_reads_a_plan(tmp_path, capsys):
    plan = tmp_path / "plan.jsonl"
    rows = [{"prompt": "Why?", "chosen": "Because " * 50, "rejected": "No " * 30}] * 20
    no_tokens = {k: v for k, v in entry(1).items() if k != "tokens"}
    plan.write_text("\n".join(json.dumps(e) for e in (entry(0), {**no_tokens, "rows": rows})) + "\n")
    assert est.main([str(plan), "--gpu", "a100"]) == 0
    out = capsys.readouterr().out
    assert "r0im" in out and "r1im" in out and "total" in out and "a100" in out and "40%" in out
    plan.write_text(json.dumps(no_tokens) + "\n")
    with pytest.raises(SystemExit) as exit_:
        est.main([str(plan)])
    assert exit_.value.code == 2 and "no token counts" in capsys.readouterr().err


def _cpu_seconds_matmul(dtype, size, repeats):
    """rmlib.precision.time_matmul in CPU seconds of this process (the machine may be shared)."""
    from rmlib.precision import time_matmul

    return time_matmul(dtype, size, max(repeats, 2), clock=time.process_time)


@pytest.mark.slow
@pytest.mark.parametrize("rm_type", ["ex", "im"])
def test_estimate_within_2x_of_a_measured_cpu_run(rm_type):
    """Two steps of SmolLM2-135M on 8 UltraFeedback pairs (fp32, one thread): the CPU seconds of the training
    call (the IM-RM's reference pass included) against the estimate at the CPU's matmul peak measured around
    it with rmlib.precision's probe, both in CPU seconds of this process, so a shared machine slows both alike.
    Measured (2026-12-05, contended 2-core AMX machine): 12.4 s vs 13.6 s estimated (EX), 20.1 vs 21.9 (IM)."""
    from rmlib.data import load_preferences
    from rmlib.models import load_model
    from rmlib.precision import probe_cpu
    from rmlib.rewards import build_reward_model
    from rmlib.runconfig import RunConfig
    from rmlib.training import make_accelerator, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lm, tok = load_model("smollm2-135m-instruct", dtype="float32")
        rm = build_reward_model(rm_type, lm, tok, seed=0)
        chosen, rejected = [], []
        for row in load_preferences("ultrafeedback", "train", on_error="drop").rows:
            c, r = rm.encode(row["prompt"], row["chosen"]), rm.encode(row["prompt"], row["rejected"])
            if max(len(c), len(r)) <= 256:
                chosen.append(c)
                rejected.append(r)
            if len(chosen) == 8:
                break
        config = RunConfig(model="smollm2-135m-instruct", rm_type=rm_type, batch_size=4, micro_batch_size=2,
                           max_steps=2, shuffle=False, progress=False, precision="fp32")
        accelerator = make_accelerator("fp32")
        before = probe_cpu(measure=_cpu_seconds_matmul)
        start = time.process_time()
        train(rm, chosen, rejected, config, accelerator=accelerator)
        measured = time.process_time() - start
        after = probe_cpu(measure=_cpu_seconds_matmul)
    finally:
        torch.set_num_threads(threads)
    peak = {"fp32_gflops": (before["fp32_gflops"] + after["fp32_gflops"]) / 2, "bf16_gflops": after["bf16_gflops"]}
    counts = DataTokens.from_encoded(chosen, rejected)
    estimate = estimate_run("smollm2-135m-instruct", rm_type, counts.n_pairs, 1, counts.mean_tokens,
                            counts.max_tokens, micro_batch=2, precision="fp32",
                            device_name=est.cpu_from_probe(peak), shared_tokens=counts.shared_tokens,
                            max_steps=2, batch_size=4)
    predicted = estimate.gpu_hours * 3600
    assert 0.5 <= measured / predicted <= 2.0, (measured, predicted, peak)


def test_plan_command_fills_and_prints_the_estimate(tmp_path, capsys):
    from rmlib import cli
    from rmlib.plan import read_plan

    out = tmp_path / "plan.jsonl"
    assert cli.main(["plan", "03", "--profile", "smoke", "-o", str(out), "--estimate", "--gpu", "a100"]) == 0
    printed = capsys.readouterr().out
    entries = read_plan(out)
    assert entries and all(e.estimate["device"] == "a100" and e.estimate["gpus"] == 1 for e in entries)
    assert all(e.estimate["tokens_trained"] > 0 and e.estimate["gpu_hours"] > 0 for e in entries)
    assert "total" in printed and "a100" in printed
    assert cli.main(["plan", "03", "--profile", "smoke", "-o", str(out), "--estimate", "--gpu", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_estimate_raises_the_planned_gpus_where_a_run_needs_more(tmp_path):
    """A 3B model is planned on one GPU (the name rule shards only the 8B); its fp32 states alone (16 bytes x
    3.09B parameters = 49 GB) exceed one 40 GB A100, so the estimate plans it sharded on 2 or more."""
    from rmlib import plan as plans
    from rmlib.runconfig import RunConfig

    recipe = {"builder": "hamiltonian", "args": {"n_train": 8, "n_test": 4, "n_vertices": 6, "edge_prob": 0.2,
                                                 "seed": 0}}
    run = RunConfig(setting="t", model="qwen2.5-3b-instruct", rm_type="ex", precision="bf16-mixed", batch_size=8)
    entry = plans.make_entry("01_gen_vs_verify", "paper", run, recipe, str(tmp_path), task="hamiltonian")
    assert (entry.gpus, entry.launcher) == (1, "single")
    (estimated,) = est.estimate_plan([entry], est.Device("a100-40gb", 312.0, 19.5, 40.0))
    assert estimated.gpus == estimated.estimate["gpus"] >= 2 and estimated.launcher == "fsdp"
    (roomy,) = est.estimate_plan([entry], "h200")
    assert (roomy.gpus, roomy.launcher) == (1, "single")
