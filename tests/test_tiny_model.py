from __future__ import annotations

from pathlib import Path

import torch

from astro_core.models.tiny import count_parameters, ensure_tiny_model, load_model


def test_builds_saves_and_reloads(tiny_model_dir: Path) -> None:
    assert (tiny_model_dir / "config.json").exists()
    assert (tiny_model_dir / "model.safetensors").exists()
    assert (tiny_model_dir / "tokenizer.json").exists()
    model, tokenizer = load_model(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert 100_000 <= count_parameters(model) <= 5_000_000
    assert tokenizer.padding_side == "left"


def test_same_seed_same_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = ensure_tiny_model(tmp_path / "again")
    a, _ = load_model(tiny_model_dir)
    b, _ = load_model(again)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_generation_is_deterministic_with_a_seed(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    inputs = tokenizer(["Solve 2x + 3 = 7."], return_tensors="pt", add_special_tokens=False)

    def sample(seed: int) -> list[int]:
        torch.manual_seed(seed)
        out = model.generate(**inputs, max_new_tokens=12, do_sample=True, temperature=1.0)
        return out[0].tolist()

    first, second, other = sample(1), sample(1), sample(2)
    assert first == second
    assert first != other
    assert len(first) > inputs.input_ids.shape[1]


def test_chat_template_round_trip(tiny_model_dir: Path) -> None:
    _, tokenizer = load_model(tiny_model_dir)
    messages = [
        {"role": "user", "content": "What is $\\frac{1}{2}+\\frac{1}{3}$?"},
        {"role": "assistant", "content": "It is \\boxed{\\frac{5}{6}}."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    for message in messages:
        assert message["content"] in text
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_any_text_encodes(tiny_model_dir: Path) -> None:
    _, tokenizer = load_model(tiny_model_dir)
    text = "naïve ∑ 日本 \x00 emoji 🙂"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
