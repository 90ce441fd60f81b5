from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

BUNDLED = ("chatml", "chatml-generation", "llama3", "seed000", "seed001")


@pytest.fixture(scope="session")
def tokenizers():
    from sft_conformance.assets import load_tokenizer

    return {name: load_tokenizer(name) for name in BUNDLED}


@pytest.fixture(scope="session")
def tok():
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml")


@pytest.fixture(scope="session")
def tok_gen():
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml-generation")


@pytest.fixture(scope="session")
def chatml():
    from sft_conformance.assets import load_tokenizer

    return load_tokenizer("chatml")


@pytest.fixture(scope="session")
def tiny(chatml):
    from sft_conformance.assets import tiny_model

    return tiny_model(chatml)
