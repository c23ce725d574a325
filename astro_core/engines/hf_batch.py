"""The hf engine's running batch: rows (one sample of one prompt each) join between decode
steps and leave when done (continuous batching).

Rows wait in a queue until a slot is free; joining rows are prefilled by the engine (each
distinct prompt once) and copied into the slot cache's groups (kv_slots.py). Each `step`
drops the rows of cancelled requests, admits waiting rows, runs one decode step and hands
back the requests whose last row finished. A drained batch gives its cache back to the
engine for the next one.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from astro_core.engines.base import GenerationRequest, SamplingParams, Ticket, derive_seed
from astro_core.engines.kv_slots import GROUPS, SlotCache, pick_group
from astro_core.protocols import FinishReason

if TYPE_CHECKING:
    from astro_core.engines.hf import HFEngine


@dataclass(eq=False)
class Row:
    """One sequence: sample `index` (prompt * n + sample) of a ticket, and its progress."""

    ticket: Ticket
    index: int
    prompt: int
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    budget: int
    seed: int | None  # of the row's random stream, made when the row starts decoding
    rng: random.Random | None = None  # (a stream holds 2.5 KB: waiting rows have none)
    cached: int = 0  # tokens of this sequence in the KV cache
    next_input: int = 0  # the token the next step feeds (the prompt's last, then each new one)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str | None = None
    finish: FinishReason = "length"


class ContinuousBatch:
    """The hf engine's RunningBatch: rows join between steps and leave when done.

    Decoding rows are kept in the cache's length groups (kv_slots.py): `groups[g][k]`
    decodes in slot `k` of group `g`.
    """

    def __init__(self, engine: HFEngine, capacity: int) -> None:
        self.engine = engine
        self.capacity = max(1, min(capacity, engine.max_num_seqs))
        self._cache: SlotCache | None = None  # taken from the engine while rows decode
        self.groups: list[list[Row]] = [[] for _ in GROUPS]
        self.waiting: deque[Row] = deque()
        self.tickets: dict[int, Ticket] = {}  # unfinished requests, by id

    @property
    def decoding(self) -> int:
        return sum(map(len, self.groups))

    @property
    def cache(self) -> SlotCache:
        if self._cache is None:
            self._cache = self.engine.take_cache(self.capacity)
        return self._cache

    @property
    def rows(self) -> int:
        return self.decoding + len(self.waiting)

    def add(
        self,
        request: GenerationRequest,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        cancel: threading.Event | None = None,
    ) -> Ticket:
        if prompt_ids is None:
            prompt_ids = self.engine.encode_request(request)
        ticket = Ticket(request, cancel)
        if not ticket.remaining:
            return ticket  # no prompts: complete already
        self.tickets[id(ticket)] = ticket
        p = request.params
        for i, ids in enumerate(prompt_ids):
            budget = min(request.budget(i), self.engine.max_model_len - len(ids))
            shared = tuple(ids)  # one tuple for the n samples
            for j in range(p.n):
                seed = derive_seed(p.seed, i, j) if p.seed is not None else None
                row = Row(ticket, i * p.n + j, i, shared, p, budget, seed)
                self.waiting.append(row)
        return ticket

    @torch.inference_mode()
    def step(self) -> list[Ticket]:
        done = self._drop_cancelled()
        self._admit()
        if not self.decoding:
            self._release()
            return done
        self.cache.reserve([[r.cached for r in rows] for rows in self.groups])  # a free column
        # Batch order: each group's rows in slot order.
        logits = self.engine.forward_step(self.cache, self.groups)
        order = [row for rows in self.groups for row in rows]
        for row in order:
            row.cached += 1
        self.engine.sample(logits, order)
        ends = self.engine.finished(order)
        over = {id(row) for row, end in zip(order, ends, strict=True) if end}
        for g, rows in enumerate(self.groups):
            ended = [k for k, row in enumerate(rows) if id(row) in over]
            for k in ended:
                row = rows[k]
                if row.ticket.finish(row.index, self.engine.completion_of(row)):
                    done.append(self.tickets.pop(id(row.ticket)))
            self._remove(g, ended)
        if not self.rows:
            self._release()
        return done

    def _release(self) -> None:
        """Drained: the engine keeps the cache for the next batch."""
        if self._cache is not None and not self.decoding:
            self.engine.give_back(self._cache)
            self._cache = None

    def _drop_cancelled(self) -> list[Ticket]:
        """Rows whose caller gave up leave now; their tickets count as done."""
        gone = [t for t in self.tickets.values() if t.cancelled]
        if not gone:
            return []
        self.waiting = deque(r for r in self.waiting if not r.ticket.cancelled)
        for g, rows in enumerate(self.groups):
            self._remove(g, [k for k, r in enumerate(rows) if r.ticket.cancelled])
        for ticket in gone:
            ticket.remaining = 0
            del self.tickets[id(ticket)]
        return gone

    def _admit(self) -> None:
        """Move waiting rows into free slots: prefill their prompts (each distinct prompt
        once) but for the last token, which the next step feeds."""
        free = self.capacity - self.decoding
        if free <= 0 or not self.waiting:
            return
        new = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        prefixes = list(dict.fromkeys(r.prompt_ids[:-1] for r in new if len(r.prompt_ids) > 1))
        prefilled = self.engine.prefill(prefixes) if prefixes else []
        lengths = [[r.cached for r in rows] for rows in self.groups]
        joins: list[tuple[int, int]] = []  # (group, index) of each new row
        for row in new:
            row.rng = random.Random(row.seed)
            row.cached = len(row.prompt_ids) - 1
            row.next_input = row.prompt_ids[-1]
            g = pick_group(lengths, row.cached)
            joins.append((g, len(lengths[g])))
            lengths[g].append(row.cached)
        self.cache.reserve(lengths)
        for g, row in zip((g for g, _ in joins), new, strict=True):
            self.groups[g].append(row)
        self.cache.set_members([[r.cached for r in rows] for rows in self.groups])
        slot_of = {id(row): join for row, join in zip(new, joins, strict=True)}
        for layers, position in prefilled:
            for g in GROUPS:
                members = [
                    (slot_of[id(r)][1], position[r.prompt_ids[:-1]])
                    for r in new
                    if slot_of[id(r)][0] == g and r.prompt_ids[:-1] in position
                ]
                if not members:
                    continue
                slots = [slot for slot, _ in members]
                self.cache.place(g, slots, layers, [row for _, row in members])

    def _remove(self, group: int, ended: list[int]) -> None:
        """Free the slots of group members `ended`: the group's last members move in."""
        if not ended:
            return
        rows = self.groups[group]
        gone = set(ended)
        keep = len(rows) - len(gone)
        holes = [k for k in range(keep) if k in gone]
        movers = [k for k in range(keep, len(rows)) if k not in gone]
        if holes:
            self.cache.move(group, movers, holes)
        for hole, mover in zip(holes, movers, strict=True):
            rows[hole] = rows[mover]
        del rows[keep:]
        self.cache.set_members([[r.cached for r in rows] for rows in self.groups])
