"""Small language models and tokenizers built from scratch (test fixtures, the demo model).

Nothing here downloads anything: the tokenizer is a byte-level BPE trained on the given texts and
the model is a randomly initialised Llama- or GPT-2-architecture network (see lm_training.py for
training one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """Byte-level BPE tokenizer (with BOS/EOS/PAD tokens) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_lm(
    arch: str,
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    tie_embeddings: bool = False,
    positions: int = 512,
) -> torch.nn.Module:
    """A small ``llama`` (nn.Linear) or ``gpt2`` (Conv1D) causal LM with seeded random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 3,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=positions,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=2,
            tie_word_embeddings=tie_embeddings,
        )
        model: torch.nn.Module = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=positions,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        model = GPT2LMHeadModel(gpt2)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    return model.eval()


def save_lm(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Save an HF model and its tokenizer into ``directory`` (created)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
