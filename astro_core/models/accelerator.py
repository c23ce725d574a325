"""Tell DeepSpeed which accelerator it is on before anything imports it.

DeepSpeed, when installed, is imported not only by our trainer but by transformers/accelerate
(`save_pretrained` unwraps models through accelerate, which imports deepspeed). On a machine
without CUDA its accelerator probe then prints "Setting accelerator to CPU" to STDOUT, which
corrupts command output. Naming the accelerator (DS_ACCELERATOR=cpu) skips the probe and the
message; on CUDA machines nothing is set, so DeepSpeed finds the GPUs itself.
"""

from __future__ import annotations

import os
import sys

import torch


def select_deepspeed_accelerator() -> None:
    """Set DS_ACCELERATOR=cpu when there is no CUDA, unless it is set or DeepSpeed is loaded."""
    if "DS_ACCELERATOR" in os.environ or "deepspeed" in sys.modules:
        return
    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
