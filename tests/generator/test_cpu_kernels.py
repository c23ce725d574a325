"""The C attention (astro_core/engines/cpu_kernels.c): exact columns, SDPA's values, the
engine's results unchanged (decode and prefill), SDPA wherever the kernel cannot be built."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
import torch.nn.functional as F

from astro_core.engines import EngineConfig, GenerationRequest, SamplingParams
from astro_core.engines import cpu_kernels as kernels
from astro_core.engines.hf import HFEngine
from astro_core.engines.kv_slots import apply_rotary
from tests.generator.test_engines import (
    JOIN_PROMPTS,
    _random_request,
    assert_same,
    joining_one_per_step,
)

# Skipped only where there is no C compiler: where there is one, the kernel must build (a
# build error fails these tests instead of hiding behind SDPA).
needs_compiler = pytest.mark.skipif(kernels._compiler() is None, reason="no C compiler here")


def test_the_kernel_builds_wherever_there_is_a_compiler() -> None:
    if kernels._compiler() is not None:
        assert kernels.load_kernel() is not None, "see the warning logged by load_kernel"


@pytest.fixture()
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """load_kernel() builds anew into an empty cache directory; the process's kernel is
    back afterwards."""
    cache = tmp_path / "kernels"
    monkeypatch.setenv("ASTRO_KERNEL_CACHE", str(cache))
    kernels.load_kernel.cache_clear()
    yield cache
    kernels.load_kernel.cache_clear()


@pytest.fixture()
def threads() -> Iterator[None]:
    """Tests that set torch's thread count give the process's back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _layout(
    lengths: list[list[int]], kv_heads: int, dim: int, rnd: random.Random
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int], torch.Tensor, torch.Tensor]:
    """Group buffers full of NaN but for each member's own columns (ending at the group's
    cursor column), and the kernel's tables for them: any column read outside a member's
    span makes its output NaN."""
    keys, values, cursors, sources = [], [], [], []
    for members in lengths:
        width = max(members) + rnd.randint(1, 40)
        at = rnd.randint(max(members) - 1, width - 1)
        k = torch.full((len(members) + 1, kv_heads, width, dim), float("nan"))
        v = torch.full_like(k, float("nan"))
        for slot, n in enumerate(members):
            k[slot, :, at - n + 1 : at + 1] = torch.randn(kv_heads, n, dim)
            v[slot, :, at - n + 1 : at + 1] = torch.randn(kv_heads, n, dim)
        keys.append(k)
        values.append(v)
        cursors.append(at)
        sources.append(kernels.source_row(k, v))
    rows = torch.tensor(
        [
            [g, slot, cursors[g] - n + 1, n]
            for g, members in enumerate(lengths)
            for slot, n in enumerate(members)
        ],
        dtype=torch.int32,
    )
    return keys, values, cursors, rows, torch.tensor(sources, dtype=torch.int64)


@needs_compiler
@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim"),
    [(4, 2, 32), (4, 4, 16), (14, 2, 64), (8, 1, 128), (2, 2, 256), (16, 1, 32)],
)
def test_each_row_attends_over_exactly_its_own_columns(
    heads: int, kv_heads: int, dim: int, threads: None
) -> None:
    """Per row, the kernel gives SDPA's attention over that row's columns (no padding read:
    the rest of the buffers is NaN), for lengths around the vector width and long ones, at
    one thread and several (the same values: rows are independent)."""
    kernel = kernels.load_kernel()
    assert kernel is not None and kernel.supports(heads, kv_heads, dim)
    rnd = random.Random(heads * dim)
    lengths = [[1, 7, 8, 9], [15, 16, 17, 33], [rnd.randint(1, 400) for _ in range(5)], [300]]
    keys, values, cursors, table, sources = _layout(lengths, kv_heads, dim, rnd)
    rows = len(table)
    # a query laid out as the lean step's: a view into a wider [rows, heads + 2 kv, dim]
    query = torch.randn(rows, heads + 2 * kv_heads, dim)[:, :heads]
    scale = dim**-0.5
    longest = max(map(max, lengths))
    got = []
    for count in (1, 3):
        torch.set_num_threads(count)
        out = kernel(query, table, sources, kv_heads, scale, longest)
        assert out.shape == (rows, heads, dim) and out.is_contiguous()
        got.append(out)
    assert torch.equal(got[0], got[1])
    r = 0
    for g, members in enumerate(lengths):
        at = cursors[g]
        for slot, n in enumerate(members):
            expected = F.scaled_dot_product_attention(
                query[r : r + 1, :, None].double(),
                keys[g][slot : slot + 1, :, at - n + 1 : at + 1].double(),
                values[g][slot : slot + 1, :, at - n + 1 : at + 1].double(),
                scale=scale,
                enable_gqa=True,
            )  # [1, heads, 1, dim]
            torch.testing.assert_close(got[0][r], expected[0, :, 0].float(), atol=1e-5, rtol=1e-5)
            r += 1


@needs_compiler
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 2, 32), (8, 8, 16), (16, 2, 64)])
def test_a_decode_step_rotates_writes_and_attends_its_new_token(
    heads: int, kv_heads: int, dim: int
) -> None:
    """Given the step's new keys/values and rotary cos/sin, the kernel writes each row's key
    rotated (as Llama's rotate-half) and its value into the row's last column, and attends
    with the rotated query: what torch's rotary, a copy and SDPA give."""
    kernel = kernels.load_kernel()
    assert kernel is not None
    rnd = random.Random(dim)
    lengths = [[1, 5, 17], [rnd.randint(2, 90) for _ in range(4)]]
    keys, values, cursors, table, sources = _layout(lengths, kv_heads, dim, rnd)
    rows = len(table)
    fused = torch.randn(rows, heads + 2 * kv_heads, dim)  # the lean step's q/k/v output
    query, key, value = fused[:, :heads], fused[:, heads : heads + kv_heads], fused[:, -kv_heads:]
    angles = torch.rand(rows, dim // 2) * 6.3
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    expected_keys = [k.clone() for k in keys]
    rotated_query = apply_rotary(query, cos[:, None], sin[:, None])
    rotated_key = apply_rotary(key, cos[:, None], sin[:, None])
    out = kernel(
        query,
        table,
        sources,
        kv_heads,
        dim**-0.5,
        max(map(max, lengths)),
        new=(key, value),
        rotary=(cos, sin),
    )
    r = 0
    for g, members in enumerate(lengths):
        at = cursors[g]
        for slot, n in enumerate(members):
            torch.testing.assert_close(keys[g][slot, :, at], rotated_key[r], atol=1e-6, rtol=0)
            assert torch.equal(values[g][slot, :, at], value[r])
            expected_keys[g][slot, :, at] = rotated_key[r]
            span = slice(at - n + 1, at + 1)
            expected = F.scaled_dot_product_attention(
                rotated_query[r : r + 1, :, None].double(),
                expected_keys[g][slot : slot + 1, :, span].double(),
                values[g][slot : slot + 1, :, span].double(),
                scale=dim**-0.5,
                enable_gqa=True,
            )
            torch.testing.assert_close(out[r], expected[0, :, 0].float(), atol=1e-5, rtol=1e-5)
            r += 1


@needs_compiler
@pytest.mark.parametrize(("heads", "dim"), [(1, 2), (2, 32), (5, 128)])
def test_rotary_is_llamas(heads: int, dim: int, threads: None) -> None:
    """The kernel's rotary (prefill's keys) gives torch's rotate-half embedding, from rows
    a stride apart (a view into the fused projections' output), the same at one thread and
    several."""
    kernel = kernels.load_kernel()
    assert kernel is not None
    rows = 137
    x = torch.randn(rows, heads + 3, dim)[:, 1 : heads + 1]
    angles = torch.rand(rows, dim // 2) * 50
    cos, sin = torch.cat([angles.cos()] * 2, dim=-1), torch.cat([angles.sin()] * 2, dim=-1)
    got = []
    for count in (1, 3):
        torch.set_num_threads(count)
        got.append(kernel.rotary(x, cos, sin))
    assert got[0].shape == (rows, heads, dim) and got[0].is_contiguous()
    assert torch.equal(got[0], got[1])
    expected = apply_rotary(x, cos[:, None], sin[:, None])
    torch.testing.assert_close(got[0], expected, atol=1e-6, rtol=0)


@needs_compiler
def test_silu_mul_is_llamas_gated_activation(threads: None) -> None:
    """silu(gate) * up as torch computes it, for the halves of a fused gate/up output (rows
    a stride apart), large, tiny and zero gates included (no overflow: e^-|g| only), the
    same at one thread and several."""
    kernel = kernels.load_kernel()
    assert kernel is not None
    gate, up = (torch.randn(145, 2 * 37) * 6).chunk(2, dim=-1)
    gate[0, :6] = torch.tensor([0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30])
    torch.set_num_threads(3)
    threaded = kernel.silu_mul(gate, up)
    torch.set_num_threads(1)
    out = kernel.silu_mul(gate, up)
    assert torch.equal(out, threaded)
    assert out.shape == gate.shape and out.is_contiguous()
    torch.testing.assert_close(out, F.silu(gate) * up, atol=1e-6, rtol=1e-6)
    assert torch.isfinite(out).all()


@needs_compiler
@pytest.mark.parametrize(("rows", "dim"), [(1, 128), (33, 7), (200, 1000)])
def test_rms_norm_is_llamas(rows: int, dim: int, threads: None) -> None:
    """The kernel's RMS norm gives the Llama module's values (float64 reference), from a
    strided view too, the same at one thread and several."""
    kernel = kernels.load_kernel()
    assert kernel is not None
    wide = torch.randn(rows, dim + 5) * 3
    x = wide[:, 2 : dim + 2]  # rows a stride apart that is not dim
    weight = torch.randn(dim)
    eps = 1e-6
    exact = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + eps)
    got = []
    for count in (1, 3):
        torch.set_num_threads(count)
        out = kernel.rms_norm(x, weight, eps)
        assert out.shape == x.shape and out.is_contiguous()
        got.append(out)
    assert torch.equal(got[0], got[1])
    torch.testing.assert_close(got[0], (weight.double() * exact).float(), atol=1e-5, rtol=1e-5)
    batched = kernel.rms_norm(x[None], weight, eps)  # [1, rows, dim], as prefill's hidden
    assert batched.shape == (1, rows, dim) and torch.equal(batched[0], got[0])


@needs_compiler
def test_shapes_the_build_does_not_handle_are_refused() -> None:
    kernel = kernels.load_kernel()
    assert kernel is not None
    assert not kernel.supports(3, 2, 32)  # query heads not a multiple of key/value heads
    assert not kernel.supports(64, 2, 32)  # 32 query heads per key/value head: over 16
    assert not kernel.supports(4, 2, 0)
    assert not kernel.supports(4, 2, 4096)  # head_dim over 16 vectors
    query = torch.randn(1, 3, 32)
    with pytest.raises(RuntimeError, match="does not handle 3/2x32 heads"):
        kernel(query, torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 5), 2, 1.0, 1)
    with pytest.raises(ValueError, match="same strides"):
        kernels.source_row(torch.zeros(1, 2, 4, 32), torch.zeros(1, 4, 2, 32).transpose(1, 2))
    # a one-token prompt's keys: strides of size-1 dimensions are arbitrary and never used
    one = torch.zeros(1, 1, 2, 32).transpose(1, 2)  # [1, 2, 1, 32], strides (64, 32, 64, 1)
    assert kernels.source_row(one, torch.zeros(1, 2, 1, 32))[2:] == [0, 32, 0]


def _engines(model: Path) -> tuple[HFEngine, HFEngine]:
    with_kernel = HFEngine(EngineConfig(model_path=str(model)))
    with_sdpa = HFEngine(EngineConfig(model_path=str(model), fast_attention=False))
    assert with_kernel._kernel is not None and with_sdpa._kernel is None
    return with_kernel, with_sdpa


@needs_compiler
@pytest.mark.parametrize("count", [1, 2])
def test_the_engine_decodes_the_same_with_the_kernel_and_with_sdpa(
    tiny_model_dir: Path, count: int, threads: None
) -> None:
    """Same tokens and log-probabilities with the kernel as with SDPA, for rows joining
    and leaving a running batch (groups growing, slots reused), at one and two threads."""
    torch.set_num_threads(count)
    with_kernel, with_sdpa = _engines(tiny_model_dir)
    batch = with_kernel.start_batch(64)
    batch.add(GenerationRequest((JOIN_PROMPTS[0],), SamplingParams(max_tokens=2)))
    batch.step()
    assert batch.cache._kernel_step  # the kernel serves this batch's steps
    while batch.rows:
        batch.step()
    for seed in range(3):
        rnd = random.Random(seed)
        requests = [_random_request(rnd) for _ in range(6)]
        capacity = rnd.choice([3, 64])
        expected = joining_one_per_step(with_sdpa, requests, capacity)
        for got, want in zip(
            joining_one_per_step(with_kernel, requests, capacity), expected, strict=True
        ):
            assert_same(got, want, 1e-5)


@needs_compiler
def test_packed_prefill_is_the_same_with_the_kernel(tiny_model_dir: Path, threads: None) -> None:
    """Prefill's causal attention by the kernel (every prompt of a pass in one call) gives
    SDPA's keys and values, also for prompts whose first tokens come from the prefix cache
    (they attend to the cached columns too), and for a prompt that is all cached."""
    from astro_core.engines.fast_prefill import PackedPrefill

    engine = HFEngine(EngineConfig(model_path=str(tiny_model_dir)))
    kernel, model = engine._kernel, engine.model
    prompts = [tuple(ids) for ids in engine.encode_request(GenerationRequest(tuple(JOIN_PROMPTS)))]
    cut = [0, 1, len(prompts[2]) // 2, 0, 0, 0, 40, len(prompts[7])]  # cached tokens per prompt
    for count in (1, 2):
        torch.set_num_threads(count)
        results = []
        for use in (kernel, None):
            prefill = PackedPrefill(model, use)
            heads = prefill([p[:c] for p, c in zip(prompts, cut, strict=True) if c], "cpu")
            cached = iter(heads)
            prefixes = [(next(cached), c) if c else None for c in cut]
            with torch.inference_mode():
                results.append(prefill(prompts, "cpu", prefixes))
        for with_kernel, with_sdpa in zip(*results, strict=True):
            for (k1, v1), (k2, v2) in zip(with_kernel, with_sdpa, strict=True):
                torch.testing.assert_close(k1, k2, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)


def test_other_devices_and_dtypes_use_sdpa(tiny_model_dir: Path) -> None:
    bf16 = HFEngine(EngineConfig(model_path=str(tiny_model_dir), dtype="bfloat16"))
    assert bf16._kernel is None
    config = bf16.model.config
    assert kernels.kernel_for("cuda", torch.float32, config) is None
    assert kernels.kernel_for("cpu", torch.bfloat16, config) is None
    [completion] = bf16.generate(["1 2 3"], max_tokens=4, seed=1)
    assert completion.num_tokens == 4 or completion.finish_reason == "eos"


def test_without_a_compiler_the_engine_uses_sdpa(
    tiny_model_dir: Path,
    fresh_build: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CC", "astro-no-such-compiler")
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.load_kernel() is None
    assert "no C compiler found" in caplog.text
    engine = HFEngine(EngineConfig(model_path=str(tiny_model_dir)))
    assert engine._kernel is None
    [completion] = engine.generate(["1 2 3"], max_tokens=3, seed=1)
    assert completion.num_tokens >= 1
    assert not fresh_build.exists() or not any(fresh_build.iterdir())


def _session_alive(session: int) -> bool:
    """Whether a process of the session is still running (killed ones may linger as zombies
    until init reaps them)."""
    for process in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_a_compiler_that_fails_is_logged_and_leaves_nothing(
    tmp_path: Path,
    fresh_build: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = _script(tmp_path / "cc", 'echo "cpu_kernels.c:1: error: no vectors" >&2\nexit 1\n')
    monkeypatch.setenv("CC", str(failing))
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.load_kernel() is None
    assert "error: no vectors" in caplog.text and "using SDPA" in caplog.text
    assert list(fresh_build.iterdir()) == []  # no partial library left behind


def test_a_compiler_that_hangs_is_given_up_once(
    tmp_path: Path,
    fresh_build: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A build past its time limit is killed with the processes it started and is not tried
    again without OpenMP (that would double the wait); the engine loads with SDPA."""
    calls = tmp_path / "calls"
    # the shell waits on a child that holds none of its pipes: only killing the session ends it
    hanging = _script(tmp_path / "cc", f'echo $$ >> "{calls}"\nsleep 30 >/dev/null 2>&1 &\nwait\n')
    monkeypatch.setenv("CC", str(hanging))
    monkeypatch.setattr(kernels, "COMPILE_SECONDS", 0.5)
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.load_kernel() is None
    assert "timed out" in caplog.text
    [shell] = calls.read_text().split()  # one try
    assert not _session_alive(int(shell)), "the compiler's processes outlived the build"


def test_partial_libraries_of_killed_builds_are_swept(
    tmp_path: Path, fresh_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_build.mkdir(mode=0o700)
    stale, recent = fresh_build / "a.so.partial", fresh_build / "b.so.partial"
    stale.write_bytes(b"")
    recent.write_bytes(b"")
    os.utime(stale, (0, 0))  # left by a build killed long ago
    monkeypatch.setenv("CC", str(_script(tmp_path / "cc", "exit 1\n")))
    assert kernels.load_kernel() is None
    assert not stale.exists() and recent.exists()  # another build may still be writing it


@needs_compiler
def test_a_compiler_without_openmp_builds_the_single_threaded_kernel(
    tiny_model_dir: Path,
    tmp_path: Path,
    fresh_build: Path,
    monkeypatch: pytest.MonkeyPatch,
    threads: None,
) -> None:
    """Apple's clang has no -fopenmp: the kernel is built without it, and a process with more
    than one torch thread then decodes with SDPA."""
    real = os.environ.get("CC") or "cc"
    no_openmp = _script(
        tmp_path / "cc",
        'for a in "$@"; do\n'
        '  [ "$a" = -fopenmp ] && { echo "unsupported option" >&2; exit 1; }\n'
        "done\n"
        f'exec {real} "$@"\n',
    )
    monkeypatch.setenv("CC", str(no_openmp))
    kernel = kernels.load_kernel()
    assert kernel is not None and not kernel.threaded
    engine = HFEngine(EngineConfig(model_path=str(tiny_model_dir)))
    for count, uses_kernel in ((2, False), (1, True)):
        torch.set_num_threads(count)
        batch = engine.start_batch(4)
        batch.add(GenerationRequest(("1 2 3",), SamplingParams(max_tokens=2, seed=1)))
        batch.step()
        assert batch.cache._kernel_step is uses_kernel
        while batch.rows:
            batch.step()


@needs_compiler
def test_a_cache_directory_others_can_write_is_not_used(
    fresh_build: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A library loaded from the cache runs in this process: a directory anyone can write
    to (where another user could plant one) is neither built into nor loaded from."""
    fresh_build.mkdir()
    fresh_build.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.load_kernel() is None
    assert "no writable cache directory" in caplog.text
    assert list(fresh_build.iterdir()) == []
    fresh_build.chmod(0o700)
    kernels.load_kernel.cache_clear()
    assert kernels.load_kernel() is not None  # the same directory, now private: built there
    [library] = fresh_build.iterdir()
    assert library.name.startswith("cpu_kernels-") and library.suffix == ".so"
    assert not library.stat().st_mode & stat.S_IWOTH


@needs_compiler
def test_sampling_draws_the_torch_path_tokens(threads: None) -> None:
    """The kernel's sampling picks, per row, the token torch's softmax + inverse CDF picks
    for the same temperature and uniform draw; masked (-inf) tokens are never drawn; the
    draw is bounded to the vocabulary even at u close to 1."""
    from astro_core.engines.hf import _inverse_cdf

    kernel = kernels.load_kernel()
    assert kernel is not None
    rnd = random.Random(5)
    rows, vocab = 64, 517
    logits = torch.randn(rows, vocab + 3)[:, :vocab] * 4  # rows a stride apart
    logits[:8, 100:] = float("-inf")  # only tokens < 100 can be drawn there
    temps = [rnd.choice([0.05, 0.7, 1.0, 3.0]) for _ in range(rows)]
    u = [rnd.random() for _ in range(rows)]
    u[:4] = [0.0, 0.999999, 0.5, 0.25]
    got = kernel.sample(logits, temps, u)
    probs = torch.softmax(logits / torch.tensor(temps)[:, None], dim=-1)
    expected = _inverse_cdf(probs, torch.tensor(u), [1.0] * rows).tolist()
    assert got == expected
    assert all(t < 100 for t in got[:8]) and all(0 <= t < vocab for t in got)
    peaked = torch.zeros(3, vocab)
    peaked[:, 42] = 200.0  # the others underflow to 0
    assert kernel.sample(peaked, [1.0] * 3, [0.0, 0.5, 0.999]) == [42, 42, 42]
    # a large vocabulary spreads rows over threads: the same draws
    wide = torch.randn(6, 50_000)
    draws = [rnd.random() for _ in range(6)]
    torch.set_num_threads(3)
    threaded = kernel.sample(wide, [1.0] * 6, draws)
    torch.set_num_threads(1)
    assert kernel.sample(wide, [1.0] * 6, draws) == threaded


@needs_compiler
def test_operands_of_the_wrong_dtype_or_shape_are_refused_by_name() -> None:
    """Each kernel checks what the C code would read: a wrong dtype or a shape that does not
    match is a ValueError naming the operand, before any C runs (no read past a buffer)."""
    kernel = kernels.load_kernel()
    assert kernel is not None
    x = torch.randn(5, 2, 8)
    cos = sin = torch.ones(5, 8)
    with pytest.raises(ValueError, match=r"weight: expected float32 \[8\]"):
        kernel.rms_norm(torch.randn(5, 8), torch.ones(7), 1e-6)
    with pytest.raises(ValueError, match="float32, got torch.float64"):
        kernel.rms_norm(torch.randn(5, 8, dtype=torch.float64), torch.ones(8), 1e-6)
    with pytest.raises(ValueError, match=r"sin: expected float32 \[5, 8\]"):
        kernel.rotary(x, cos, torch.ones(4, 8))
    with pytest.raises(ValueError, match=r"cos: expected float32 \[5, 8\], got torch.bfloat16"):
        kernel.rotary(x, cos.bfloat16(), sin)
    with pytest.raises(ValueError, match=r"up: expected float32 \[5, 8\]"):
        kernel.silu_mul(torch.randn(5, 8), torch.randn(5, 9))
    with pytest.raises(ValueError, match="5 rows of logits, 4 temperatures and 5 uniform"):
        kernel.sample(torch.randn(5, 100), [1.0] * 4, [0.5] * 5)
    with pytest.raises(ValueError, match="float32, got torch.float16"):
        kernel.sample(torch.randn(5, 100).half(), [1.0] * 5, [0.5] * 5)
