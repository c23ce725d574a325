"""The hf engine's KV cache: one preallocated buffer per layer, one slot (row) per sequence.

transformers' DynamicCache grows by concatenation, so each decode step copies the whole
cache, and dropping a finished sequence copies it again. Here every layer's keys and values
live in `[slots, kv_heads, width, head_dim]` buffers that are written in place:

- the sequences decoding now occupy slots `0..live-1`; a finished one is replaced by the
  last slot's sequence (one row copied), so the live slots stay contiguous;
- every sequence's cached tokens end at the shared column `cursor` (left padding), so a
  decode step writes column `cursor` of every live slot, and attention reads the window
  `[low, cursor]`, `low` being where the longest live sequence starts;
- when the buffer runs out of columns (or a new prompt is longer than the room left of
  `cursor`) the window is copied into a larger buffer ("relayout"); room is doubled each
  time, so the copies cost O(1) per generated token.

The model sees this through transformers' `Cache` interface: the attention layers call
`update(keys, values, layer)` and attend to what it returns. The padding mask is passed
as a 4-D mask, which transformers uses as is.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer

_MIN_COLUMNS = 64
_MIN_SLOTS = 8


def check_full_attention(config: Any) -> None:
    """Raise ValueError unless every layer of the model caches plain (full) attention."""
    layers = DynamicCache(config=config).layers
    odd = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if odd:
        raise ValueError(
            f"the hf engine decodes models whose layers all use full attention; this "
            f"{getattr(config, 'model_type', 'model')} has {', '.join(odd)} layers "
            "(sliding-window or linear attention): serve it with kind: vllm"
        )


class _SlotLayer(CacheLayerMixin):  # type: ignore[no-untyped-call]
    """The Cache-interface view of one layer: `update` writes the step at the cursor."""

    is_sliding = False

    def __init__(self, slots: SlotCache, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.slots = slots
        self.index = index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # allocated by SlotCache.reserve

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.slots
        if key_states.shape[2] != 1 or key_states.shape[0] != s.live:
            raise RuntimeError("the slot cache decodes one token per live sequence per step")
        keys, values = s.keys[self.index], s.values[self.index]
        keys[: s.live, :, s.cursor] = key_states[:, :, 0]
        values[: s.live, :, s.cursor] = value_states[:, :, 0]
        return keys[: s.live, :, s.low : s.cursor + 1], values[: s.live, :, s.low : s.cursor + 1]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.slots.cursor + 1 - self.slots.low, 0

    def get_seq_length(self) -> int:
        return self.slots.cursor - self.slots.low

    def get_max_length(self) -> int:
        return -1


class SlotCache(Cache):
    """Keys and values of up to `capacity` sequences, decoded one token per step."""

    def __init__(self, config: Any, capacity: int, dtype: torch.dtype, device: str) -> None:
        text = config.get_text_config()
        heads = int(text.num_attention_heads)
        self.kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        self.head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        self.num_layers = int(text.num_hidden_layers)
        self.capacity = capacity
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []  # per layer [slots, kv_heads, width, head_dim]
        self.values: list[torch.Tensor] = []
        self.live = 0  # slots 0..live-1 decode now
        self.cursor = 0  # the column the next step writes
        self.low = 0  # first column any live sequence uses
        super().__init__(layers=[_SlotLayer(self, i) for i in range(self.num_layers)])

    @property
    def slots(self) -> int:
        return int(self.keys[0].shape[0]) if self.keys else 0

    @property
    def width(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    def reserve(self, slots: int, left: int) -> None:
        """Make room for `slots` live sequences, `left` cached columns before the cursor and
        one column at it, moving the window to a larger buffer if needed."""
        window = self.cursor - self.low
        left = max(left, window)
        if slots <= self.slots and left <= self.cursor and self.cursor < self.width:
            return
        if slots > self.capacity:
            raise ValueError(f"{slots} sequences do not fit {self.capacity} slots")
        rows = self.slots
        if slots > rows:
            rows = min(self.capacity, max(slots, _MIN_SLOTS, 2 * rows))
        cursor = left
        width = cursor + max(cursor, _MIN_COLUMNS)  # as much room to the right as is used
        shape = (rows, self.kv_heads, width, self.head_dim)
        moved: list[list[torch.Tensor]] = [[], []]
        for old_buffers, new_buffers in zip((self.keys, self.values), moved, strict=True):
            for i in range(self.num_layers):
                # Zeros, not empty: masked columns still enter attention as 0 * value, and
                # uninitialised memory may hold NaN or inf, which would poison the sum.
                buffer = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if old_buffers and window and self.live:
                    buffer[: self.live, :, cursor - window : cursor] = old_buffers[i][
                        : self.live, :, self.low : self.cursor
                    ]
                new_buffers.append(buffer)
        self.keys, self.values = moved
        self.low = cursor - window
        self.cursor = cursor

    def place(
        self,
        slots: torch.Tensor,
        prefilled: list[tuple[torch.Tensor, torch.Tensor]],
        rows: torch.Tensor,
    ) -> None:
        """Copy rows `rows` of prefilled keys/values ([b, kv_heads, n, head_dim] per layer,
        left-padded) into `slots`, ending at the cursor."""
        start = self.cursor - prefilled[0][0].shape[2]
        for i, (keys, values) in enumerate(prefilled):
            self.keys[i][slots, :, start : self.cursor] = keys[rows]
            self.values[i][slots, :, start : self.cursor] = values[rows]

    def move(self, sources: list[int], targets: list[int]) -> None:
        """Copy the window of slots `sources` to slots `targets` (disjoint sets)."""
        src = torch.tensor(sources, device=self.device)
        dst = torch.tensor(targets, device=self.device)
        for buffer in (*self.keys, *self.values):
            buffer[dst, :, self.low : self.cursor] = buffer[src, :, self.low : self.cursor]
