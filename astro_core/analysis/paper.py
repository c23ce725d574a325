"""The paper's published numbers (ASTRO, Kim et al. 2025, Llama-3.1-70B-Instruct), for scale.

pass@1 in percent per arm and benchmark, and the Pearson r between backtracks per answer
and accuracy across the RL checkpoints. Our tiny CPU models are nowhere near them; reports
print them beside our numbers so that a GPU run can be read against the paper.
"""

from __future__ import annotations

PAPER_MODEL = "Llama-3.1-70B-Instruct"
PAPER_ACCURACY: dict[str, dict[str, float]] = {
    "base": {"math500": 65.8, "amc23": 37.5, "aime24": 10.0},
    "sft": {"math500": 69.6, "amc23": 51.9, "aime24": 16.3},
    "rl": {"math500": 81.8, "amc23": 64.4, "aime24": 30.0},
    "direct_rl": {"math500": 79.8, "amc23": 60.5, "aime24": 27.1},
}
PAPER_CORRELATION: dict[str, float] = {"math500": 0.82, "amc23": 0.85, "aime24": 0.85}
ARM_NAMES = {
    "base": "base",
    "sft": "ASTRO SFT",
    "rl": "ASTRO RL",
    "direct_sft": "Direct SFT",
    "direct_rl": "Direct RL",
}
