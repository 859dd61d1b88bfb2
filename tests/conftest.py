"""Shared fixtures: a tiny random Llama (2 layers, SmolLM2 tokenizer) for speed, and the real SmolLM2."""

import pytest
import torch

from rmlib.models import load_model


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the 2-layer random Llama; tests must not modify it (use `fresh_tiny`)."""
    torch.manual_seed(0)
    return load_model("tiny-random", dtype="float32", seed=0)


@pytest.fixture
def fresh_tiny():
    return load_model("tiny-random", dtype="float32", seed=0)


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2-135m-instruct", dtype="float32")
