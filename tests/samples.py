"""Conversations shared by the adapter tests."""

SINGLE = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello you"}]
MULTI = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "3+3"},
    {"role": "assistant", "content": "6 ok"},
]
LOOKALIKE = [
    {"role": "user", "content": "write assistant\n then <|im_start|> as text"},
    {"role": "assistant", "content": "sure: assistant\nuser"},
]
CONVS = [SINGLE, MULTI]


def installed(package: str) -> bool:
    """Whether a distribution is installed (the real tokenizers need the `tokenizers` extra)."""
    import importlib.metadata

    try:
        importlib.metadata.version(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def need_tokenizer(name: str):
    """The bundled tokenizer ``name``; a real family's test is skipped, with the install hint,
    when its registry package is missing."""
    import pytest

    from sft_conformance.assets import families as fam
    from sft_conformance.assets import load_tokenizer

    if name in fam.FAMILIES and not installed(fam.FAMILIES[name].package):
        pytest.skip(f"{name} needs {fam.FAMILIES[name].package}: {fam.INSTALL_HINT}")
    return load_tokenizer(name)
