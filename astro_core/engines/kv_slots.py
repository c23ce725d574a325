"""The hf engine's KV cache: one preallocated buffer per layer, one slot (row) per sequence.

transformers' DynamicCache grows by concatenation, so each decode step copies the whole
cache, and dropping a finished sequence copies it again. Here every layer's keys and values
live in `[slots, kv_heads, width, head_dim]` buffers that are written in place:

- every sequence's cached tokens end at the shared column `cursor` (left padding), so a
  decode step writes column `cursor` of every live slot;
- attention reads, for each sequence, a window of columns that ends at the cursor. One
  window for all would make every sequence pay for the longest (MATH prompts run from 50 to
  650 tokens), so sequences form two *groups*, each with its own window `[low, cursor]`:
  group 0 (short) fills slots from the bottom of the buffer, group 1 (long) from the top,
  and a new sequence joins the side of the best short/long split (see `pick_group`);
- a finished sequence is replaced by the last sequence of its group (one row copied), so
  each group's slots stay contiguous and attention reads plain views;
- when the buffer runs out of columns, the live window is moved back within it; when it
  runs out of slots, or a new prompt is longer than the room left of the cursor, everything
  is copied into a larger buffer; room is doubled each time, so the copies cost O(1) per
  generated token.

The model sees this through transformers' public seams: a `Cache` whose `update(keys,
values, layer)` writes the new column, and an attention function registered as
`astro_slots` that attends each group to its own window (during prefill, where no slot
cache is decoding, it is plain `sdpa`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "astro_slots"
_MIN_COLUMNS = 64
_MIN_SLOTS = 8
GROUPS = (0, 1)

# The slot cache decoding on this thread now (None during prefill and outside the engine).
_decoding: ContextVar[SlotCache | None] = ContextVar("astro_slot_cache", default=None)


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


def slot_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The `astro_slots` attention: per-group windows while a slot cache decodes."""
    slots = _decoding.get()
    if slots is None:
        output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        return output, None
    return slots.attend(query, key, value, kwargs.get("scaling")), None


AttentionInterface.register(ATTENTION, slot_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_slot_attention(model: Any) -> None:
    """Make the model attend through `slot_attention` (prefill stays plain sdpa)."""
    model.set_attn_implementation(ATTENTION)


def pick_group(lengths: Sequence[Sequence[int]], new: int) -> int:
    """The group a sequence with `new` cached tokens joins: 0 (short) or 1 (long).

    Every member of a group attends to as many columns as its longest member has, so the
    best split of the sorted lengths l_1..l_n into short and long minimises
    k * l_k + (n - k) * l_n. The split is computed over every member plus the new one (the
    members stay where they are: moving them would cost copies), and the new sequence joins
    the side of the split it falls on.
    """
    ordered = sorted([*lengths[0], *lengths[1], new])
    n = len(ordered)
    # k = n (everyone short) first: on ties one window is kept
    best = min(range(n, 0, -1), key=lambda k: k * ordered[k - 1] + (n - k) * ordered[-1])
    return 0 if new <= ordered[best - 1] else 1


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
        return self.slots.write(self.index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.slots.cursor + 1 - min(self.slots.low), 0

    def get_seq_length(self) -> int:
        return self.slots.cursor - min(self.slots.low)

    def get_max_length(self) -> int:
        return -1


class SlotCache(Cache):
    """Keys and values of up to `capacity` sequences in two groups, one token per step.

    Group 0's k-th sequence sits in slot k, group 1's in slot `slots - 1 - k`. The batch
    order of a decode step is group 0 in slot order, then group 1 in slot order.
    """

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
        self.live = [0, 0]  # sequences per group
        self.low = [0, 0]  # first column each group attends to
        self.masks: list[torch.Tensor] = []  # per group, this step's [n, 1, 1, window] mask
        self.cursor = 0  # the column the next step writes
        super().__init__(layers=[_SlotLayer(self, i) for i in range(self.num_layers)])

    @property
    def slots(self) -> int:
        return int(self.keys[0].shape[0]) if self.keys else 0

    @property
    def width(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    def rows_of(self, group: int) -> slice:
        """The slots of a group's live sequences, in slot order."""
        n = self.live[group]
        return slice(0, n) if group == 0 else slice(self.slots - n, self.slots)

    def slot(self, group: int, index: int) -> int:
        return index if group == 0 else self.slots - 1 - index

    def reserve(self, counts: Sequence[int], left: int) -> None:
        """Make room for `counts` sequences per group, `left` cached columns before the
        cursor and one column at it, moving everything to a larger buffer if needed."""
        window = self.cursor - min(
            (self.low[g] for g in GROUPS if self.live[g]), default=self.cursor
        )
        left = max(left, window)
        needed = sum(counts)
        if needed <= self.slots and left <= self.cursor and self.cursor < self.width:
            return
        if needed > self.capacity:
            raise ValueError(f"{needed} sequences do not fit {self.capacity} slots")
        rows = self.slots
        if needed > rows:
            rows = min(self.capacity, max(needed, _MIN_SLOTS, 2 * rows))
        cursor = left + left // 2  # headroom for longer prompts to come
        if rows == self.slots and cursor + max(cursor // 2, _MIN_COLUMNS) <= self.width:
            # Only out of columns: move the window within the buffers (no allocation).
            self._shift(window, cursor)
        else:
            self._grow(rows, window, cursor, cursor + max(cursor, _MIN_COLUMNS))
        self.low = [cursor - (self.cursor - low) for low in self.low]
        self.cursor = cursor

    def _shift(self, window: int, cursor: int) -> None:
        """Move every live row's last `window` columns to end at column `cursor`."""
        for buffer in (*self.keys, *self.values):
            for g in GROUPS:
                if window and self.live[g]:
                    rows = self.rows_of(g)
                    kept = buffer[rows, :, self.cursor - window : self.cursor].clone()
                    buffer[rows, :, cursor - window : cursor] = kept

    def _grow(self, rows: int, window: int, cursor: int, width: int) -> None:
        """Larger buffers; every live row's last `window` columns end at column `cursor`."""
        shape = (rows, self.kv_heads, width, self.head_dim)
        moved: list[list[torch.Tensor]] = [[], []]
        for old_buffers, new_buffers in zip((self.keys, self.values), moved, strict=True):
            for i in range(self.num_layers):
                # Zeros, not empty: masked columns still enter attention as 0 * value, and
                # uninitialised memory may hold NaN or inf, which would poison the sum.
                buffer = torch.zeros(shape, dtype=self.dtype, device=self.device)
                for g in GROUPS:
                    if old_buffers and window and self.live[g]:
                        n = self.live[g]
                        target = slice(0, n) if g == 0 else slice(rows - n, rows)
                        buffer[target, :, cursor - window : cursor] = old_buffers[i][
                            self.rows_of(g), :, self.cursor - window : self.cursor
                        ]
                new_buffers.append(buffer)
        self.keys, self.values = moved

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

    def move(self, group: int, sources: list[int], targets: list[int]) -> None:
        """Copy the window of group members `sources` to members `targets` (disjoint)."""
        src = torch.tensor([self.slot(group, k) for k in sources], device=self.device)
        dst = torch.tensor([self.slot(group, k) for k in targets], device=self.device)
        low = self.low[group]
        for buffer in (*self.keys, *self.values):
            buffer[dst, :, low : self.cursor] = buffer[src, :, low : self.cursor]

    def set_members(self, cached: Sequence[Sequence[int]]) -> None:
        """Record each group's members by their cached tokens (after members join or
        leave): the live counts and the windows follow."""
        self.live = [len(c) for c in cached]
        self.low = [self.cursor - max(c, default=0) for c in cached]

    def write(
        self, layer: int, key_states: torch.Tensor, value_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's keys/values ([rows, kv_heads, 1, dim], batch order) at the
        cursor; returns the layer's whole buffers (`attend` takes each group's window)."""
        if key_states.shape[2] != 1 or key_states.shape[0] != sum(self.live):
            raise RuntimeError("the slot cache decodes one token per live sequence per step")
        keys, values = self.keys[layer], self.values[layer]
        start = 0
        for g in GROUPS:
            rows, n = self.rows_of(g), self.live[g]
            keys[rows, :, self.cursor] = key_states[start : start + n, :, 0]
            values[rows, :, self.cursor] = value_states[start : start + n, :, 0]
            start += n
        return keys, values

    def begin_step(self, cached: Sequence[Sequence[int]]) -> None:
        """Set each group's window and padding mask for a step; `cached` lists the cached
        tokens of each group's members in slot order."""
        self.set_members(cached)
        self.masks = []
        for g in GROUPS:
            lengths = torch.tensor(cached[g], device=self.device, dtype=torch.long)
            offsets = torch.arange(self.low[g] - self.cursor, 1, device=self.device)
            # A member attends to its own `cached` columns before the cursor and the cursor;
            # an additive float mask (-inf elsewhere) is a little faster than a boolean one.
            padding = offsets[None, :] < -lengths[:, None]
            mask = torch.zeros(padding.shape, dtype=self.dtype, device=self.device)
            self.masks.append(mask.masked_fill_(padding, float("-inf"))[:, None, None, :])

    def attend(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: Any
    ) -> torch.Tensor:
        """Attention of one decode step, each group over its window: [b, 1, heads, dim]."""
        batch, heads, _, dim = query.shape
        outputs, start = [], 0
        for g in GROUPS:
            n = self.live[g]
            if not n:
                continue
            window = slice(self.low[g], self.cursor + 1)
            rows = self.rows_of(g)
            # One query token: the query heads sharing a key/value head become that head's
            # queries, so keys and values are not repeated per query head (GQA).
            q = query[start : start + n].reshape(n, self.kv_heads, heads // self.kv_heads, dim)
            out = F.scaled_dot_product_attention(
                q,
                keys[rows, :, window],
                values[rows, :, window],
                attn_mask=self.masks[g],
                scale=scaling,
            )
            outputs.append(out.reshape(n, heads, 1, dim))
            start += n
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        return output.transpose(1, 2).contiguous()

    def decoding(self) -> Any:
        """Context in which the model's attention reads this cache's group windows."""
        return _Decoding(self)


class _Decoding:
    def __init__(self, cache: SlotCache) -> None:
        self.cache = cache
        self.token: Any = None

    def __enter__(self) -> None:
        self.token = _decoding.set(self.cache)

    def __exit__(self, *exc: object) -> None:
        _decoding.reset(self.token)
