"""Tiny random-initialised Llama models with a locally built tokenizer.

Tests and local mode need a real causal LM in Hugging Face format without any download.
`build_tiny_model` trains a byte-level BPE tokenizer on a small built-in corpus (so every
string can be encoded), attaches a Llama-3 style chat template, initialises a small Llama
from a seed and saves both with `save_pretrained`. The result loads with the same
`load_model` used for any other HF model directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from astro_core.models.accelerator import select_deepspeed_accelerator

# save_pretrained imports deepspeed (through accelerate) when it is installed.
select_deepspeed_accelerator()

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|pad|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, START_HEADER, END_HEADER, EOT]

# Llama-3 layout: header per message, <|eot_id|> after each; the assistant header opens a reply.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# Text the BPE merges are learned from: the vocabulary of the domain (steps, LaTeX, reflection).
_CORPUS = [
    "Let's think step by step. First, we compute the value of the expression.",
    "Therefore, the final answer is \\boxed{42}.",
    "But wait, are we solving the problem correctly so far? Hmm...",
    "I'm not sure if we're solving the problem correctly so far.",
    "Our solution seems to be correct so far.",
    "Let's go back to where we set up the equation.",
    "Let's restart our solution from the beginning.",
    "\\frac{1}{2} + \\frac{3}{4} = \\frac{5}{4}, \\sqrt{2}, \\pi, x^2 + y^2 = r^2",
    "Solve for x: 2x + 3 = 7, so x = 2. The sum of the roots is -b/a.",
    "The probability is \\frac{1}{6}. The area of the triangle is 12 square units.",
    "user assistant system Please reason step by step, and put your final answer within \\boxed{}.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 ( ) [ ] { } + - * / = < > ^ _ $ , . ; :",
]


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model. The defaults give about 0.5M parameters."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 8192
    seed: int = 0
    # A synthetic family (astro_core.synthetic) whose text the tokenizer also learns from;
    # digits are then split one per token, so a small model can learn arithmetic on them.
    family: str = ""


def build_tokenizer(vocab_size: int = 512, family: str = "") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the built-in corpus (plus a synthetic family's
    text, with one token per digit), with Llama-3 special tokens."""
    corpus = list(_CORPUS)
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if family:
        from astro_core import synthetic

        if family not in synthetic.FAMILIES:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(synthetic.FAMILIES)}")
        corpus += synthetic.corpus()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Build, initialise from `spec.seed` and save a tiny Llama + tokenizer into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_size, spec.family)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(EOT), tokenizer.convert_tokens_to_ids(EOS)],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "astro_tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out


def ensure_tiny_model(out_dir: str | Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Build the tiny model unless out_dir already holds one built from the same spec."""
    out = Path(out_dir)
    marker = out / "astro_tiny_spec.json"
    if marker.exists() and json.loads(marker.read_text()) == asdict(spec):
        return out
    return build_tiny_model(out, spec)


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load any HF causal-LM directory (tiny or real) and its tokenizer, in eval mode."""
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    model.to(device)  # type: ignore[arg-type]
    model.eval()  # type: ignore[no-untyped-call]
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
