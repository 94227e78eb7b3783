"""Short model specs resolve offline-first; SmolLM2 loads from its PyPI GGUF (slow)."""

from __future__ import annotations

import pytest

from indexer.errors import ModelLoadError
from indexer.models import registry as model_registry
from indexer.models.loading import load_causal_lm, model_fingerprint, resolve_model_spec


def test_canonical_names():
    assert model_registry.canonical("SmolLM2") == "smollm2-135m"
    assert model_registry.canonical("smollm2-135m-instruct") == "smollm2-135m"
    assert model_registry.canonical("shakespeare-llama") == "shakespeare-llama"
    assert model_registry.canonical("./some/dir") is None


def test_shakespeare_llama_resolves_to_committed_directory():
    name, path, convert = model_registry.resolve("shakespeare-llama")
    assert path == model_registry.REPO_MODELS / "shakespeare-llama" and convert is None
    assert resolve_model_spec(str(path)) == (path, None)


def test_unknown_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model not found"):
        load_causal_lm(str(tmp_path / "missing"))


@pytest.mark.slow
def test_smollm2_gguf_and_cached_copy_are_the_same_model(tmp_path, monkeypatch):
    """First load dequantises the GGUF and caches an HF copy; the copy has identical weights,
    identical tokenization, and a chat template."""
    monkeypatch.setenv("LORIF_CACHE", str(tmp_path))
    first = load_causal_lm("smollm2-135m")
    assert first.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    second = load_causal_lm("smollm2")
    assert second.gguf_file is None and "smollm2-135m-hf" in second.directory
    assert model_fingerprint(first.model) == model_fingerprint(second.model)
    text = "To be, or not to be, that is the question."
    assert first.tokenizer(text)["input_ids"] == second.tokenizer(text)["input_ids"]
    chat = second.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>assistant\n")
