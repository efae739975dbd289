"""Real models for the engine tests, built offline.

``tiny_llama`` writes a randomly initialised Llama (hidden 128, 2 layers, 4 heads, head_dim 32 —
vLLM's CPU attention needs head_dim ≥ 32) with a byte-level BPE tokenizer trained locally by
``tokenizers``: a real model vLLM loads and runs like any other, in ~3 s. Its weights are
seeded, so its outputs are the same on every run. ``smollm2`` converts the embedded default
model once per cache directory (see ``qrs model fetch``).
"""

from __future__ import annotations

import json
from pathlib import Path

_CORPUS = [
    "The capital of France is Paris.",
    "Quantum random numbers choose every token.",
    "One two three four five six seven eight nine ten.",
    "A quick brown fox jumps over the lazy dog.",
    "Entropy is fetched just in time after the logits exist.",
] * 20


def tiny_llama(target: Path, vocab_size: int = 512, seed: int = 1234) -> Path:
    """Build (once) the tiny random Llama in ``target``; return the directory."""
    if (target / "config.json").is_file():
        return target
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(target)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Spread the output layer so distributions are peaked enough to have a clear order.
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(target)
    # No sampling defaults in generation_config.json: requests keep vLLM's neutral defaults.
    (target / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2}), encoding="utf-8"
    )
    return target
