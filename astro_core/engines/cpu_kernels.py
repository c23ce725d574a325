"""C kernels for the hf engine on CPU (attention, RMS norm), compiled at first use.

Decoding asks, for each sequence, one query token's attention over that sequence's cached
keys and values. torch's `scaled_dot_product_attention` on CPU runs a flash-attention kernel
built for blocks of queries: with one query per sequence it reaches a fraction of the memory
bandwidth, and since the slot cache hands it one window per length group, every sequence
also reads its group's longest window (padding it then masks out). Together these made
attention ~40% of a decode step of the tiny model at 32 sequences. Prefill (causal attention
of each packed prompt) is the same problem with one row per prompt token.

`cpu_kernels.c` computes each query row over exactly its own span of columns, in the
layout the keys and values already have, with the softmax in registers: 2-5x faster than
SDPA (more with AVX-512 than AVX2), float32 results equal to SDPA's up to rounding (~1e-7).
Each key and value is read once for all the query heads that share it: at 32 sequences on a
busy machine the columns come from memory, not cache, and reading them is most of the cost.
A decode step's call also rotates the step's query and new key by their rotary embedding
and writes the new key and value into the cache, work that takes a dozen small torch
operations per layer otherwise.

The same library holds Llama's RMS norm as one call (torch runs it as six operations: at 32
rows each costs more in dispatch than in arithmetic), used by the lean decode step and the
packed prefill, and the engine's sampling (softmax at a temperature, then the inverse CDF
at each row's own uniform draw) as one call for steps where no row uses top-p.

It is plain C with vector extensions, compiled with `-O3 -march=native` (and OpenMP, which
spreads rows over torch's threads, where the compiler has it) by the machine's C compiler
(`$CC`, else cc / gcc / clang) into `$ASTRO_KERNEL_CACHE` (default
`$XDG_CACHE_HOME/astro/kernels`, else a private temp directory), keyed by the source, the
compiler and the CPU, so each machine builds it once (~0.3 s).

Where it does not apply the engine uses SDPA and torch's norms, with the same results up to
rounding: no C
compiler or a failed build (logged once), another device or dtype, a head size or a
query/key head ratio this build does not handle, or more than one torch thread when the
compiler had no OpenMP.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-std=gnu11",
    "-shared",
    "-fPIC",
)
# OpenMP spreads rows over torch's threads (one runtime: torch's libgomp.so.1 is the one
# already loaded); a compiler without it (Apple's clang) builds the single-threaded kernel.
THREADED = ("-fopenmp",)
COMPILE_SECONDS = 120


class CPUKernels:
    """The loaded kernels. Attention: one call attends every query row of a pass, for one
    layer.

    Rows are described by two small tables (the layout is in cpu_kernels.c): `sources`
    (int64 [sources, 5]: keys' and values' addresses, slot, head and column strides) and
    `rows` (int32 [rows, 4]: source, slot, first column, columns)."""

    def __init__(self, path: Path) -> None:
        library = ctypes.CDLL(str(path))
        # The short kernels (norm, rotary, sampling: microseconds) keep the GIL: releasing it
        # would let the service's event loop take it in the middle of a decode step, which
        # then waits for the loop's Python. Attention, the long one, releases it.
        holding = ctypes.PyDLL(str(path))
        self._attend = library.astro_attention
        self._attend.restype = ctypes.c_int
        self._attend.argtypes = [
            *[ctypes.c_int] * 4,  # rows, heads, kv_heads, dim
            ctypes.c_float,  # scale
            ctypes.c_void_p,  # query
            ctypes.c_int64,  # query's row stride
            ctypes.c_void_p,  # rows table
            ctypes.c_void_p,  # sources table
            ctypes.c_void_p,  # out
            ctypes.c_void_p,  # scores
            ctypes.c_int64,  # scores per thread
            ctypes.c_int,  # threads
            ctypes.c_void_p,  # new keys (or NULL)
            ctypes.c_int64,  # their row stride
            ctypes.c_void_p,  # new values (or NULL)
            ctypes.c_int64,  # their row stride
            ctypes.c_void_p,  # rotary cos (or NULL)
            ctypes.c_void_p,  # rotary sin (or NULL)
        ]
        self._rms_norm = holding.astro_rms_norm
        self._rms_norm.restype = None
        self._rms_norm.argtypes = [
            *[ctypes.c_int] * 2,  # rows, dim
            ctypes.c_void_p,  # x
            ctypes.c_int64,  # its row stride
            ctypes.c_void_p,  # weight
            ctypes.c_float,  # eps
            ctypes.c_void_p,  # out
            ctypes.c_int,  # threads
        ]
        self._supports = library.astro_attention_supports
        self._supports.restype = ctypes.c_int
        self._supports.argtypes = [ctypes.c_int] * 3
        self._rotary = holding.astro_rotary
        self._rotary.restype = None
        self._rotary.argtypes = [
            *[ctypes.c_int] * 3,  # rows, heads, dim
            ctypes.c_void_p,  # x
            ctypes.c_int64,  # its row stride
            *[ctypes.c_void_p] * 3,  # cos, sin, out
            ctypes.c_int,  # threads
        ]
        self._silu_mul = holding.astro_silu_mul
        self._silu_mul.restype = None
        self._silu_mul.argtypes = [
            *[ctypes.c_int] * 2,  # rows, width
            ctypes.c_void_p,  # gate
            ctypes.c_int64,  # its row stride
            ctypes.c_void_p,  # up
            ctypes.c_int64,  # its row stride
            ctypes.c_void_p,  # out
            ctypes.c_int,  # threads
        ]
        self._sample = holding.astro_sample
        self._sample.restype = None
        self._sample.argtypes = [
            *[ctypes.c_int] * 2,  # rows, vocab
            ctypes.c_void_p,  # logits
            ctypes.c_int64,  # their row stride
            *[ctypes.c_void_p] * 4,  # temperatures, uniforms, scratch, tokens out
            ctypes.c_int,  # threads
        ]
        self.threaded = bool(library.astro_attention_threaded())

    def supports(self, heads: int, kv_heads: int, head_dim: int) -> bool:
        """Whether this build handles the model's attention shape."""
        return bool(self._supports(heads, kv_heads, head_dim))

    def __call__(
        self,
        query: torch.Tensor,
        rows: torch.Tensor,
        sources: torch.Tensor,
        kv_heads: int,
        scale: float,
        longest: int,
        new: tuple[torch.Tensor, torch.Tensor] | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attention of `query` ([rows, heads, dim], float32): [rows, heads, dim].

        `longest`: the most columns any row attends to (sizes the scratch space). `new`:
        keys and values ([rows, kv_heads, dim]) written into each row's last column first,
        as a decode step's new token. `rotary`: each row's rotary cos and sin ([rows, dim]),
        applied to the query and the new keys first (Llama's rotate-half form). The tables
        must describe keys and values that stay alive for the call; the engine's callers
        build them from the tensors they attend over."""
        count, heads, dim = query.shape
        query = _heads_contiguous(query)
        new_keys, new_values = (_heads_contiguous(t) for t in new) if new else (None, None)
        cos, sin = (t.contiguous() for t in rotary) if rotary else (None, None)
        threads = self._threads()
        scratch = (heads // kv_heads) * longest
        scores = torch.empty(threads * scratch, dtype=torch.float32)
        out = torch.empty((count, heads, dim), dtype=torch.float32)
        status = self._attend(
            count,
            heads,
            kv_heads,
            dim,
            scale,
            query.data_ptr(),
            query.stride(0),
            rows.data_ptr(),
            sources.data_ptr(),
            out.data_ptr(),
            scores.data_ptr(),
            scratch,
            threads,
            new_keys.data_ptr() if new_keys is not None else None,
            new_keys.stride(0) if new_keys is not None else 0,
            new_values.data_ptr() if new_values is not None else None,
            new_values.stride(0) if new_values is not None else 0,
            cos.data_ptr() if cos is not None else None,
            sin.data_ptr() if sin is not None else None,
        )
        if status != 0:
            raise RuntimeError(f"cpu attention does not handle {heads}/{kv_heads}x{dim} heads")
        return out

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """Llama's RMS norm over the last dimension of float32 `x` (one call, not six)."""
        rows = _rows(x)
        weight = _operand(weight, (rows.shape[1],), "weight")
        out = torch.empty(x.shape, dtype=torch.float32)
        self._rms_norm(
            rows.shape[0],
            rows.shape[1],
            rows.data_ptr(),
            rows.stride(0),
            weight.data_ptr(),
            eps,
            out.data_ptr(),
            self._threads(),
        )
        return out

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x ([rows, heads, dim] float32) rotated by each row's rotary cos/sin ([rows, dim]),
        as Llama's rotate-half form: [rows, heads, dim] contiguous."""
        x = _heads_contiguous(x)
        rows, heads, dim = x.shape
        cos, sin = (_operand(t, (rows, dim), name) for t, name in ((cos, "cos"), (sin, "sin")))
        out = torch.empty((rows, heads, dim), dtype=torch.float32)
        self._rotary(
            rows,
            heads,
            dim,
            x.data_ptr(),
            x.stride(0),
            cos.data_ptr(),
            sin.data_ptr(),
            out.data_ptr(),
            self._threads(),
        )
        return out

    def silu_mul(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up (float32, same shape; the last dimension contiguous), as Llama's
        MLP computes it: one call instead of three operations."""
        shape = gate.shape
        gate, up = _rows(gate), _rows(_operand(up, tuple(shape), "up", contiguous=False))
        out = torch.empty(shape, dtype=torch.float32)
        self._silu_mul(
            gate.shape[0],
            gate.shape[1],
            gate.data_ptr(),
            gate.stride(0),
            up.data_ptr(),
            up.stride(0),
            out.data_ptr(),
            self._threads(),
        )
        return out

    def sample(
        self, logits: torch.Tensor, temperatures: list[float], uniforms: list[float]
    ) -> list[int]:
        """Each row's token drawn from softmax(logits / temperature) ([rows, vocab] float32,
        temperatures > 0) by inverse CDF at its uniform draw in [0, 1): the engine's
        sampling without top-p, in one call instead of a dozen operations."""
        logits = _rows(logits)
        rows, vocab = logits.shape
        if len(temperatures) != rows or len(uniforms) != rows:
            raise ValueError(
                f"sample: {rows} rows of logits, {len(temperatures)} temperatures and "
                f"{len(uniforms)} uniform draws"
            )
        temperature = torch.tensor(temperatures, dtype=torch.float32)
        uniform = torch.tensor(uniforms, dtype=torch.float32)
        scratch = torch.empty(rows * vocab, dtype=torch.float32)
        tokens = torch.empty(rows, dtype=torch.int64)
        self._sample(
            rows,
            vocab,
            logits.data_ptr(),
            logits.stride(0),
            temperature.data_ptr(),
            uniform.data_ptr(),
            scratch.data_ptr(),
            tokens.data_ptr(),
            self._threads(),
        )
        return tokens.tolist()

    def _threads(self) -> int:
        """Threads a call may spread its rows over: torch's, where built with OpenMP."""
        return torch.get_num_threads() if self.threaded else 1

    def usable(self) -> bool:
        """Whether it serves this thread count (a build without OpenMP: one thread only;
        with more, SDPA spreads the work over them)."""
        return self.threaded or torch.get_num_threads() == 1


def source_row(keys: torch.Tensor, values: torch.Tensor) -> list[int]:
    """The sources-table entry of keys and values shaped [slots, kv_heads, columns, dim]
    (float32, the same strides, dim contiguous; see `same_layout`)."""
    strides = _strides(keys)
    if strides != _strides(values) or strides[3] != 1 or keys.dtype != torch.float32:
        raise ValueError("keys and values must be float32 at the same strides, dim contiguous")
    return [keys.data_ptr(), values.data_ptr(), *strides[:3]]


def _operand(
    t: torch.Tensor, shape: tuple[int, ...], name: str, contiguous: bool = True
) -> torch.Tensor:
    """A float32 operand of the shape a kernel reads (else ValueError naming it: the C code
    would read past it), contiguous unless the caller handles strides."""
    if t.dtype != torch.float32 or tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected float32 {list(shape)}, got {t.dtype} {list(t.shape)}")
    return t.contiguous() if contiguous else t


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as float32 rows ([-1, last dimension]), each contiguous (rows at any stride)."""
    if x.dtype != torch.float32:
        raise ValueError(f"cpu kernels take float32, got {x.dtype}")
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _heads_contiguous(rows: torch.Tensor) -> torch.Tensor:
    """[rows, heads, dim] float32 with heads and dims contiguous (rows at any stride)."""
    if rows.dtype != torch.float32:
        raise ValueError(f"cpu kernels take float32, got {rows.dtype}")
    _, _, dim = rows.shape
    if rows.stride(2) == 1 and (rows.stride(1) == dim or rows.shape[1] == 1):
        return rows
    return rows.contiguous()


def same_layout(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values as `source_row` takes them (copied only when their strides differ)."""
    strides = _strides(keys)
    if strides == _strides(values) and strides[3] == 1:
        return keys, values
    return keys.contiguous(), values.contiguous()


def _strides(tensor: torch.Tensor) -> tuple[int, ...]:
    """Strides that address something: a dimension of size 1 has only index 0 (its stride,
    which torch leaves arbitrary, is never used), so it counts as 0 (1 for dim)."""
    last = len(tensor.shape) - 1
    return tuple(
        stride if size > 1 else int(i == last)
        for i, (size, stride) in enumerate(zip(tensor.shape, tensor.stride(), strict=True))
    )


def kernel_for(device: str, dtype: torch.dtype, config: Any) -> CPUKernels | None:
    """The kernel for a model's attention (decode steps, packed prefill), or None where SDPA
    serves it (see above)."""
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        return None
    kernel = load_kernel()
    if kernel is None:
        return None
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return kernel if kernel.supports(heads, kv_heads, head_dim) else None


@functools.cache
def load_kernel() -> CPUKernels | None:
    """The kernel built for this machine (compiled once into the cache directory), or None
    where it cannot be built (the reason is logged)."""
    compiler = _compiler()
    if compiler is None:
        log.warning("cpu kernels: no C compiler found ($CC, cc, gcc, clang); using SDPA")
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [source, " ".join(FLAGS + THREADED).encode(), compiler.encode(), _cpu().encode()]
        )
    ).hexdigest()[:16]
    name = f"cpu_kernels-{key}.so"
    library = next((d / name for d in _cache_dirs() if _trusted(d) and (d / name).exists()), None)
    if library is None:
        try:
            try:
                library = _build(compiler, [*FLAGS, *THREADED], name)
            except subprocess.TimeoutExpired:
                raise
            except subprocess.SubprocessError:  # no OpenMP: the single-threaded kernel
                library = _build(compiler, list(FLAGS), name)
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("cpu kernels: building with %s failed: %s; using SDPA", compiler, error)
            return None
    try:
        return CPUKernels(library)
    except (OSError, AttributeError) as error:
        log.warning("cpu kernels: loading %s failed (%s); using SDPA", library, error)
        return None


def _build(compiler: str, flags: list[str], name: str) -> Path:
    """Compile into the first writable cache directory: to a private file, then renamed into
    place, so processes building at the same time each finish with a whole library."""
    for directory in _cache_dirs():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _trusted(directory):
                continue
            handle, partial = tempfile.mkstemp(dir=directory, suffix=".so.partial")
            break
        except OSError:
            continue
    else:
        raise OSError(f"no writable cache directory among {', '.join(map(str, _cache_dirs()))}")
    os.close(handle)
    library = directory / name
    _sweep_partials(directory)
    try:
        # In a session of its own, so that a compiler past its time is killed with every
        # process it started (cc runs cc1, as, ld).
        with subprocess.Popen(
            [compiler, *flags, str(SOURCE), "-o", partial],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as proc:
            try:
                output, _ = proc.communicate(timeout=COMPILE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        if proc.returncode != 0:
            tail = output.strip().splitlines()[-3:]
            raise subprocess.SubprocessError(" / ".join(tail) or f"exit {proc.returncode}")
        os.replace(partial, library)
    finally:
        Path(partial).unlink(missing_ok=True)
    return library


def _sweep_partials(directory: Path) -> None:
    """Remove partial libraries left by builds that were killed (younger ones may be other
    processes' builds in progress)."""
    old = time.time() - 2 * COMPILE_SECONDS
    for partial in directory.glob("*.so.partial"):
        with contextlib.suppress(OSError):
            if partial.stat().st_mtime < old:
                partial.unlink()


def _compiler() -> str | None:
    named = os.environ.get("CC")
    if named:
        return shutil.which(named)
    return next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def _cache_dirs() -> list[Path]:
    """$ASTRO_KERNEL_CACHE if set; else the user's cache, then the temp directory (a
    read-only home, as in a locked-down pod)."""
    named = os.environ.get("ASTRO_KERNEL_CACHE")
    if named:
        return [Path(named)]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    private = Path(tempfile.gettempdir()) / f"astro-kernels-{os.getuid()}"
    return [Path(base) / "astro" / "kernels", private]


def _trusted(directory: Path) -> bool:
    """Ours and writable by no one else (a library loaded from it runs in this process)."""
    try:
        info = directory.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = ("model name", "flags", "Features", "CPU part")
    lines = {line for line in info.splitlines() if line.split(":")[0].strip() in keep}
    return "\n".join(sorted(lines))
