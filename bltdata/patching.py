"""Patch boundaries from per-byte entropies or bytes (docs/design.md §3), batched and compiled.

A patcher cuts each document's n bytes into patches whose lengths sum to n. The rule that
decides whether byte k starts a patch depends on the mode:

- ``entropy``:   k = 0, or H[k] > θ
- ``entropy`` with ``threshold_add`` θa: k <= 1, or (H[k] > θ and H[k] - H[k-1] > θa)
- ``monotonic``: k <= 1, or H[k] - H[k-1] > θ
- ``space``:     k = 0, or byte k-1 is space-like and byte k-2 is not (BOS, at k-2 for
  k = 1, counts as space-like); space-like = ASCII but not [0-9A-Za-z], or a UTF-8 lead
  byte (>= 0xC0)
- ``static``:    k mod P = 0
- ``byte``:      always

``max_patch_length`` M then splits any longer patch greedily into M, M, ..., remainder.

Float semantics: entropies are cast to float32 and so is θ (and θa), and every comparison
is a strict ``>`` between float32 values; differences H[k] - H[k-1] are rounded to
float32 before comparing. This is what the reference patcher computes when it compares a
float32 tensor with a Python float (torch casts the scalar to the tensor's dtype), so
boundaries match it exactly, ties at θ included. NaN entropies never start a patch.

Why numba: the rule is a scan with a data-dependent output size, which array libraries
can only express as a mask followed by nonzero/diff (several passes and temporaries) or a
Python loop per document. One compiled call here handles a whole batch (flat arrays +
document offsets, no Python work per document): each 64-byte block is tested with SIMD
compares into a bit mask whose set bits become patch starts. That runs at 1-3 GB of
document bytes per second on one core, 10-30x a plain torch version (see
``benchmarks/bench_patching.py``). The kernels release the GIL and use one thread.
"""
from __future__ import annotations

import functools
import logging
import math

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from bltdata.options import is_real
# The configuration lives in bltdata.patch_config (no numba); re-exported for the callers of the kernels.
from bltdata.patch_config import DEFAULT_THRESHOLD, ENTROPY_MODES, MODES, PatcherConfig  # noqa: F401

logger = logging.getLogger(__name__)

# Kernel mode codes; entropy + threshold_add is its own rule.
_ENTROPY, _MONOTONIC, _SPACE, _STATIC, _BYTE, _ENTROPY_ADD = range(6)
_MODE_CODES = {"entropy": _ENTROPY, "monotonic": _MONOTONIC, "space": _SPACE,
               "static": _STATIC, "byte": _BYTE}
_CALIBRATABLE = ENTROPY_MODES


# ---------------------------------------------------------------------------------------
# Compiled kernels. A document is scanned in blocks of 64 bytes: the rule is evaluated for
# a whole block into a 64-bit mask (SIMD compares, no branches); the set bits are then
# turned into start positions with tzcnt/blsr, writing 8 or 16 slots unconditionally so
# that the loop's trip count is predictable (simdjson's "flatten bits" trick; slots past
# the real count are overwritten later). The first block (whose rule would look before
# the document) and the last partial block take a branch-free scalar path. A second pass
# turns the starts (in cache: one document's worth) into lengths, split at max_len.
# Slices indexed by plain `range` indices let numba drop its negative-index checks,
# which would otherwise block vectorisation.

_BLOCK = 64
_NO_LIMIT = 2**31 - 1  # max_len when max_patch_length is None
_STARTS_SLACK = _BLOCK + 1  # garbage slots of _flatten_bits + the end sentinel


@njit(cache=True, nogil=True, inline="always")
def _space_like(b):
    """1 for ASCII bytes other than [0-9A-Za-z] and for UTF-8 lead bytes (>= 0xC0), else 0."""
    v = np.int32(b)
    digit = np.int32(np.uint32(v - 48) < np.uint32(10))
    letter = np.int32(np.uint32((v | 0x20) - 97) < np.uint32(26))
    return (np.int32(v < 0x80) & (1 - (digit | letter))) | np.int32(v >= 0xC0)


@njit(cache=True, nogil=True, inline="always")
def _scalar_flag(mode, h, data, k, theta, theta_add):
    """1 if byte k (1 <= k) starts a patch, else 0, without branches on the data."""
    if mode == _ENTROPY:
        return np.int64(h[k] > theta)
    if mode == _SPACE:  # at k = 1, BOS stands at k - 2 and is space-like
        before = _space_like(data[k - 2]) if k >= 2 else 1
        return np.int64(_space_like(data[k - 1]) & (1 - before))
    if k == 1:  # monotonic and threshold_add always start a patch at byte 1
        return np.int64(1)
    rises = np.float32(h[k] - h[k - 1])
    if mode == _MONOTONIC:
        return np.int64(rises > theta)
    return np.int64(h[k] > theta) & np.int64(rises > theta_add)


@njit(cache=True, nogil=True)
def _scalar_starts(mode, h, data, lo, hi, theta, theta_add, starts, count):
    """Append the starts among bytes lo .. hi-1 (lo >= 1) to starts[count:]."""
    for k in range(lo, hi):
        starts[count] = k
        count += _scalar_flag(mode, h, data, k, theta, theta_add)
    return count


@njit(cache=True, nogil=True, inline="always")
def _flatten_bits(mask, base, starts, count):
    """Append base + index of every set bit of mask to starts[count:]; returns the count."""
    n_bits = 0
    rest = mask
    while rest != np.uint64(0):  # compiled to popcnt
        rest &= rest - np.uint64(1)
        n_bits += 1
    for i in range(8):  # unconditional: slots past n_bits are overwritten later
        starts[count + i] = base + np.int64(trailing_zeros(mask))
        mask &= mask - np.uint64(1)
    if n_bits > 8:
        for i in range(8, 16):
            starts[count + i] = base + np.int64(trailing_zeros(mask))
            mask &= mask - np.uint64(1)
        i = 16
        while mask != np.uint64(0):
            starts[count + i] = base + np.int64(trailing_zeros(mask))
            mask &= mask - np.uint64(1)
            i += 1
    return count + n_bits


# One block loop per rule (not one loop with a mode switch inside): LLVM vectorises each
# mask computation far better on its own. Blocks start at base >= 64, so the look-backs
# (H[k-1], bytes k-1 and k-2) stay inside the document. Each returns (count, next base).


@njit(cache=True, nogil=True)
def _entropy_blocks(h, base, theta, starts, count):
    while base + _BLOCK <= h.shape[0]:
        block = h[base:base + _BLOCK]
        mask = np.uint64(0)
        for j in range(_BLOCK):
            mask |= np.uint64(block[j] > theta) << np.uint64(j)
        count = _flatten_bits(mask, base, starts, count)
        base += _BLOCK
    return count, base


@njit(cache=True, nogil=True)
def _monotonic_blocks(h, base, theta, starts, count):
    while base + _BLOCK <= h.shape[0]:
        block = h[base - 1:base + _BLOCK]
        mask = np.uint64(0)
        for j in range(_BLOCK):
            mask |= np.uint64(np.float32(block[j + 1] - block[j]) > theta) << np.uint64(j)
        count = _flatten_bits(mask, base, starts, count)
        base += _BLOCK
    return count, base


@njit(cache=True, nogil=True)
def _entropy_add_blocks(h, base, theta, theta_add, starts, count):
    while base + _BLOCK <= h.shape[0]:
        block = h[base - 1:base + _BLOCK]
        mask = np.uint64(0)
        for j in range(_BLOCK):
            rises = np.float32(block[j + 1] - block[j]) > theta_add
            mask |= np.uint64((block[j + 1] > theta) & rises) << np.uint64(j)
        count = _flatten_bits(mask, base, starts, count)
        base += _BLOCK
    return count, base


@njit(cache=True, nogil=True)
def _space_blocks(data, base, starts, count):
    while base + _BLOCK <= data.shape[0]:
        # bit j: byte base+j-1 is space-like and byte base+j-2 is not
        block = data[base - 1:base + _BLOCK - 1]
        space = np.uint64(0)
        for j in range(_BLOCK):
            space |= np.uint64(_space_like(block[j])) << np.uint64(j)
        before = (space << np.uint64(1)) | np.uint64(_space_like(data[base - 2]))
        count = _flatten_bits(space & ~before, base, starts, count)
        base += _BLOCK
    return count, base


@njit(cache=True, nogil=True)
def _rule_starts(mode, h, data, n, theta, theta_add, starts):
    """Start positions of the natural patches of one document (n >= 1); returns how many."""
    starts[0] = 0
    base = min(n, _BLOCK)
    count = _scalar_starts(mode, h, data, 1, base, theta, theta_add, starts, 1)
    if mode == _ENTROPY:
        count, base = _entropy_blocks(h, base, theta, starts, count)
    elif mode == _MONOTONIC:
        count, base = _monotonic_blocks(h, base, theta, starts, count)
    elif mode == _ENTROPY_ADD:
        count, base = _entropy_add_blocks(h, base, theta, theta_add, starts, count)
    else:
        count, base = _space_blocks(data, base, starts, count)
    return _scalar_starts(mode, h, data, base, n, theta, theta_add, starts, count)


@njit(cache=True, nogil=True)
def _static_starts(n, patch_size, starts):
    count = 0
    for k in range(0, n, patch_size):
        starts[count] = k
        count += 1
    return count


@njit(cache=True, nogil=True)
def _emit_lengths(starts, count, n, max_len, out):
    """Write the lengths of the `count` patches to `out` (which has one spare slot)."""
    starts[count] = n
    if max_len == _NO_LIMIT:
        for i in range(count):
            out[i] = starts[i + 1] - starts[i]
        return count
    written = np.uint64(0)  # unsigned: numba skips the negative-index check
    for i in range(count):
        length = starts[i + 1] - starts[i]
        # Lengths up to 2 * max_len without a data-dependent branch: write both pieces,
        # keep the second only if it is real.
        first = min(length, max_len)
        rest = length - first
        out[written] = first
        out[written + np.uint64(1)] = min(rest, max_len)
        written += np.uint64(1) + np.uint64(rest > 0)
        rest -= max_len
        while rest > 0:  # rare: longer than 2 * max_len
            out[written] = min(rest, max_len)
            written += np.uint64(1)
            rest -= max_len
    return np.int64(written)


@njit(cache=True, nogil=True)
def _patch_batch_kernel(mode, offsets, entropies, data, theta, theta_add, max_len, patch_size,
                        starts, out, patch_offsets):
    """Fill `out` with every document's lengths and `patch_offsets`; return the patch count."""
    n_docs = offsets.shape[0] - 1
    cursor = 0
    for d in range(n_docs):
        patch_offsets[d] = cursor
        lo = offsets[d]
        hi = offsets[d + 1]
        if hi == lo:
            continue
        if mode == _STATIC:
            count = _static_starts(hi - lo, patch_size, starts)
        elif mode == _SPACE:
            count = _rule_starts(mode, entropies, data[lo:hi], hi - lo, theta, theta_add, starts)
        else:
            count = _rule_starts(mode, entropies[lo:hi], data, hi - lo, theta, theta_add, starts)
        cursor += _emit_lengths(starts, count, hi - lo, max_len, out[cursor:])
    patch_offsets[n_docs] = cursor
    return cursor


# ---------------------------------------------------------------------------------------
# Python API


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view, so that every caller hits the same compiled specialisation."""
    view = array.view()
    view.flags.writeable = False
    return view


def _as_offsets(offsets) -> np.ndarray:
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError("offsets must be a 1-D array of n_docs + 1 values, "
                         f"got shape {offsets.shape}")
    if offsets[0] != 0:
        raise ValueError(f"offsets must start at 0, got {int(offsets[0])}")
    if offsets.shape[0] > 1 and np.any(np.diff(offsets) < 0):
        bad = int(np.argmax(np.diff(offsets) < 0))
        raise ValueError(f"offsets must be non-decreasing; document {bad} has a negative length")
    if offsets.shape[0] > 1 and np.max(np.diff(offsets)) >= 2**31:
        raise ValueError("documents must be shorter than 2**31 bytes (patch lengths are int32)")
    return offsets


def _as_flat(values, dtype, name: str, total: int) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.ndim != 1 or array.shape[0] != total:
        raise ValueError(f"{name} must be a flat array of offsets[-1] = {total} values "
                         f"(one per byte), got shape {array.shape}")
    return array


def _kernel_args(config: PatcherConfig, theta: float | None = None) -> tuple:
    mode = _MODE_CODES[config.mode]
    if config.mode == "entropy" and config.threshold_add is not None:
        mode = _ENTROPY_ADD
    theta_add = 0.0 if config.threshold_add is None else config.threshold_add
    max_len = _NO_LIMIT if config.max_patch_length is None else int(config.max_patch_length)
    with np.errstate(over="ignore"):  # |θ| beyond float32 range becomes ±inf, as in torch
        theta32 = np.float32(config.threshold if theta is None else theta)
        theta_add32 = np.float32(theta_add)
    return mode, theta32, theta_add32, max_len, int(config.patch_size)


def _run(config: PatcherConfig, offsets: np.ndarray, entropies: np.ndarray, data: np.ndarray,
         theta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Patch a validated batch; `theta` overrides the config's threshold (calibration)."""
    total = int(offsets[-1])
    if config.mode == "byte":  # one patch per byte: nothing to compute
        return np.ones(total, np.int32), offsets.copy()
    # Buffers are numpy's, not the kernel's own: numpy asks Linux for transparent huge
    # pages on large arrays, which makes first-touch page faults several times cheaper.
    max_doc = int(np.max(np.diff(offsets))) if offsets.shape[0] > 1 else 0
    starts = np.empty(max_doc + _STARTS_SLACK, np.int32)  # one document's, reused: in cache
    lengths = np.empty(total + 1, np.int32)  # at most one patch per byte, plus a spare slot
    patch_offsets = np.empty(offsets.shape[0], np.int64)
    mode, theta32, theta_add32, max_len, patch_size = _kernel_args(config, theta)
    n_patches = _patch_batch_kernel(
        mode, _readonly(offsets), _readonly(entropies), _readonly(data), theta32, theta_add32,
        max_len, patch_size, starts, lengths, patch_offsets)
    try:
        lengths.resize(n_patches)  # in place (realloc, no copy); fails if anything else holds it
    except ValueError:  # seen in a fresh Dask worker process: something else holds a reference
        lengths = lengths[:n_patches].copy()
    return lengths, patch_offsets


_NO_ENTROPIES = np.empty(0, np.float32)
_NO_BYTES = np.empty(0, np.uint8)


def patch_batch(config: PatcherConfig, offsets: np.ndarray, *, entropies: np.ndarray | None = None,
                data: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Patch lengths of many documents in one compiled call.

    Document d spans ``[offsets[d], offsets[d+1])`` of the flat ``entropies`` (H[0..n-1]
    per document, cast to float32) and of the flat bytes ``data`` (uint8; ``space`` mode
    only). Returns ``(lengths, patch_offsets)``: int32 lengths of every patch, flat, and
    int64 ``patch_offsets`` (n_docs + 1) so that document d's patches are
    ``lengths[patch_offsets[d]:patch_offsets[d+1]]``. Empty documents have no patches.
    """
    offsets = _as_offsets(offsets)
    total = int(offsets[-1])
    if config.needs_entropies and entropies is None:
        raise ValueError(f"mode {config.mode!r} needs entropies")
    if config.needs_bytes and data is None:
        raise ValueError(f"mode {config.mode!r} needs the document bytes (data=)")
    entropies = (_as_flat(entropies, np.float32, "entropies", total)
                 if config.needs_entropies else _NO_ENTROPIES)
    data = _as_flat(data, np.uint8, "data", total) if config.needs_bytes else _NO_BYTES
    return _run(config, offsets, entropies, data)


def patch_lengths(config: PatcherConfig, data, entropies: np.ndarray | None = None) -> np.ndarray:
    """Patch lengths (int32) of one document.

    ``data`` is the document's bytes (bytes-like or uint8 array; in entropy modes only its
    length is used). ``entropies`` may hold n values or the n + 1 the entropy engine
    returns (H[n], after the last byte, plays no part in patching).
    """
    if isinstance(data, str):
        raise TypeError("patch_lengths needs the document's bytes, not str (encode it first)")
    data = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"patch_lengths needs bytes or a 1-D uint8 array, got {data.dtype} "
                        f"with shape {data.shape}")
    n = data.shape[0]
    if entropies is not None:
        entropies = np.asarray(entropies)
        if entropies.ndim != 1 or entropies.shape[0] not in (n, n + 1):
            raise ValueError(f"a document of {n} bytes needs {n} or {n + 1} entropies, "
                             f"got shape {entropies.shape}")
        entropies = entropies[:n]
    offsets = np.array([0, n], np.int64)
    lengths, _ = patch_batch(config, offsets, entropies=entropies, data=data)
    return lengths


# ---------------------------------------------------------------------------------------
# Threshold calibration


def _float32_key(value: np.float32) -> int:
    """Integer key of a float32 that orders like the float (so bisection is exact)."""
    bits = int(np.array(value, np.float32).view(np.int32))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


def _key_float32(key: int) -> np.float32:
    bits = key if key >= 0 else (-key) | 0x80000000
    return np.array(bits & 0xFFFFFFFF, np.uint32).view(np.float32)[()]


def _threshold_statistic(entropies: np.ndarray, config: PatcherConfig) -> np.ndarray:
    """The float32 values that θ is compared with (H[k], or H[k] - H[k-1] for monotonic)."""
    if config.mode == "monotonic":
        return np.diff(entropies)  # float32 - float32, rounded like the kernel's
    return entropies


def _mean_patch_fn(entropies, offsets, config):
    """mean_patch(key): bytes per patch over the sample with θ = _key_float32(key) (memoised)."""
    total_bytes = int(offsets[-1])

    @functools.lru_cache(maxsize=None)
    def mean_patch(key: int) -> float:
        _, patch_offsets = _run(config, offsets, entropies, _NO_BYTES, theta=_key_float32(key))
        return total_bytes / int(patch_offsets[-1])

    return mean_patch


def calibrate_threshold(entropies, offsets, target_mean_patch: float,
                        config: PatcherConfig) -> float:
    """θ for which the mean patch length over a sample is closest to ``target_mean_patch``.

    The sample is laid out as for :func:`patch_batch` (flat float32 entropies, H[0..n-1]
    per document, and offsets); the mean patch length is total bytes / total patches. Works
    for ``entropy`` (threshold_add kept fixed) and ``monotonic`` modes and honours
    ``max_patch_length``. The mean is a non-decreasing step function of θ, so a bisection
    over the float32 values of θ (about 32 patching passes) finds the exact crossing; the
    returned θ is a float32 value as a Python float. Raises ValueError when the target lies
    outside the range the sample can reach.
    """
    if config.mode not in _CALIBRATABLE:
        raise ValueError(f"calibration works for modes {_CALIBRATABLE}, not {config.mode!r}")
    if not is_real(target_mean_patch) or not 0 < target_mean_patch < math.inf:
        raise ValueError(f"target_mean_patch must be a positive number, got {target_mean_patch!r}")
    offsets = _as_offsets(offsets)
    entropies = _as_flat(entropies, np.float32, "entropies", int(offsets[-1]))
    if offsets[-1] == 0:
        raise ValueError("cannot calibrate on an empty sample (0 bytes)")
    statistic = _threshold_statistic(entropies, config)
    statistic = statistic[np.isfinite(statistic)]
    mean_patch = _mean_patch_fn(entropies, offsets, config)
    if statistic.size == 0:
        lo_key = hi_key = _float32_key(np.float32(config.threshold))
    else:
        lo_key = _float32_key(statistic.min()) - 1  # every value above θ: most patches
        hi_key = _float32_key(statistic.max())      # no value above θ: fewest patches
    low, high = mean_patch(lo_key), mean_patch(hi_key)
    _check_reachable(target_mean_patch, low, high, config)
    key = _bisect(mean_patch, lo_key, hi_key, target_mean_patch)
    return _closest(mean_patch, key, lo_key, target_mean_patch)


def _check_reachable(target: float, low: float, high: float, config: PatcherConfig) -> None:
    if low <= target <= high:
        return
    raise ValueError(
        f"mean patch length {target} is unreachable on this sample with mode={config.mode!r}, "
        f"threshold_add={config.threshold_add}, max_patch_length={config.max_patch_length}: "
        f"any threshold gives a mean between {low:.4f} and {high:.4f} bytes per patch")


def _bisect(mean_patch, lo_key: int, hi_key: int, target: float) -> int:
    """Smallest key in (lo_key, hi_key] whose mean reaches target, given mean(hi_key) >= target."""
    if mean_patch(lo_key) >= target:
        return lo_key
    while hi_key - lo_key > 1:
        mid = (lo_key + hi_key) // 2
        if mean_patch(mid) >= target:
            hi_key = mid
        else:
            lo_key = mid
    return hi_key


def _closest(mean_patch, key: int, lo_key: int, target: float) -> float:
    above = mean_patch(key)
    if key > lo_key:
        below = mean_patch(key - 1)
        if target - below < above - target:
            key, above = key - 1, below
    if abs(above - target) > 0.05 * target:
        logger.warning("closest mean patch length on this sample is %.4f (target %.4f): "
                       "entropy ties leave a gap", above, target)
    theta = float(_key_float32(key))
    logger.info("calibrated threshold %.9g -> mean patch length %.4f (target %.4f)",
                theta, above, target)
    return theta
