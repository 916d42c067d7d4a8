"""Batched, exact scoring of documents with an entropy model.

``EntropyEngine.score(docs)`` returns, for every document of n bytes, the n + 1 entropies
H[0..n] of docs/design.md §2 (nats, full 260-way softmax; H[k] predicts byte k after BOS, b0..b(k-1)),
exactly as if the document were run alone at full length:

- **Length bucketing.** Each document is padded to its bucket length (its own length
  rounded up to a multiple of 8, or of 1/8 of its power of two: ≤ 12.5 % padding), and
  batches hold documents of one bucket, as many as fit ``batch_bytes`` positions per step.
  Padding sits at the right end of a row, where causal attention keeps it away from real
  positions. Because a document's padded shape depends only on its own length, its
  entropies are bit-identical however it is batched (CPU, fp32): the pipeline's output does
  not change with the batch budget.
- **Exact chunking.** A batch is run in steps of ``chunk_len`` positions. Each layer keeps
  the post-RoPE keys/values of the last ``window - 1`` positions (:class:`KVCache`) and the
  next chunk attends to them, so nothing is lost at chunk boundaries. Rows are sorted by
  length, so the rows that have finished are always a prefix and are dropped from the batch
  (and the cache) before the next step.

Results depend only on the document: bit-identical across batchings for a fixed
``chunk_len``, and |ΔH| ≲ 1e-5 across chunk sizes (float summation order).

**Precision** (``precision=``: ``fp32``, ``bf16``, ``int8``; :mod:`bltdata.entropy.precision`)
changes the entropies, so it is part of what a result depends on; the default is the
device's fastest float type (:func:`bltdata.device.default_precision`: bf16 on a CPU with
AVX512-BF16/AMX and on CUDA, fp32 otherwise). The guarantee above holds per precision: for a
given precision the entropies are bit-identical across batchings on the CPU. On CUDA bf16
runs the model under autocast (optionally ``torch.compile``d); entropies are always
computed in float32 from the logits (float32 logits on the CPU in every precision).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from bltdata.entropy.model import EntropyModel, KVCache
from bltdata.entropy.precision import convert_model
from bltdata.ids import BOS_ID, EOS_ID, OFFSET, PAD_ID

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Running totals over every ``score`` call of an engine."""

    documents: int = 0
    bytes: int = 0
    tokens: int = 0         # real positions run through the model (n + 1 per document)
    padded_tokens: int = 0  # positions run, padding included
    batches: int = 0
    steps: int = 0          # model calls (a batch of long documents takes several)
    seconds: float = 0.0

    @property
    def padding_waste(self) -> float:
        """Fraction of the positions run that were padding."""
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**self.__dict__, "padding_waste": self.padding_waste, "bytes_per_second": self.bytes_per_second}


def bucket_length(length: int) -> int:
    """The padded length of a row of `length` positions: rounded up to a multiple of 8, or of
    1/8 of its power of two for long rows (≤ 12.5 % padding)."""
    step = max(8, 1 << max(0, length.bit_length() - 4))
    return -(-length // step) * step


def plan_batches(lengths: Sequence[int], batch_bytes: int, chunk_len: int) -> list[np.ndarray]:
    """Indices of the documents of each batch; the rows of a batch share one bucket length.

    ``lengths`` are token counts. Every document is padded to its own `bucket_length`, never
    to its batch's longest row, so the shapes its positions are computed with — and hence its
    entropies, bit for bit — do not depend on the other documents, the batch budget or the
    order of the input. A batch costs rows × min(bucket, chunk_len) positions per step; it
    holds at least one document, so one longer than the budget runs alone.
    """
    buckets = np.array([bucket_length(int(n)) for n in lengths], dtype=np.int64)
    order = np.lexsort((np.asarray(lengths, dtype=np.int64), buckets))
    batches, current, current_bucket = [], [], None
    for index in order:
        bucket = int(buckets[index])
        rows_allowed = max(1, batch_bytes // min(bucket, chunk_len))
        if current and (bucket != current_bucket or len(current) >= rows_allowed):
            batches.append(np.array(current))
            current = []
        current.append(index)
        current_bucket = bucket
    if current:
        batches.append(np.array(current))
    return batches


def entropies_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the softmax over the last axis, computed in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def nll_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats of ``targets`` (same leading shape as ``logits``)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


# Positions per forward pass (padding included) and per chunk. On CPU small batches win: a
# few thousand positions already keep the matrix units busy, and larger activations fall
# out of cache (measured: 8192-position batches ~15 % slower than 2048-4096). On GPU, big.
CPU_DEFAULTS = {"batch_bytes": 4096, "chunk_len": 1024}
GPU_DEFAULTS = {"batch_bytes": 1 << 18, "chunk_len": 4096}


class EntropyEngine:
    """Scores documents (bytes) with an :class:`EntropyModel`; see the module docstring."""

    def __init__(self, model: EntropyModel, *, device: str | torch.device = "cpu", batch_bytes: int | None = None,
                 chunk_len: int | None = None, precision: str | None = None, dtype: torch.dtype | None = None,
                 compile: bool = False):
        self.device = torch.device(device)
        defaults = GPU_DEFAULTS if self.device.type == "cuda" else CPU_DEFAULTS
        batch_bytes = defaults["batch_bytes"] if batch_bytes is None else batch_bytes
        chunk_len = defaults["chunk_len"] if chunk_len is None else chunk_len
        if batch_bytes < 1 or chunk_len < 1:
            raise ValueError(f"batch_bytes ({batch_bytes}) and chunk_len ({chunk_len}) must be positive")
        self.precision = _precision(precision, dtype, self.device)
        if self.device.type == "cpu" and self.precision != "fp32":
            _warn_if_emulated(self.precision)
        self.model = model.to(self.device).eval()
        self._run_model = self._converted_model()
        self.window = model.config.window
        self.batch_bytes, self.chunk_len = batch_bytes, chunk_len
        self._forward = torch.compile(self._run_model, dynamic=True) if compile else self._run_model
        self.stats = EngineStats()

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the matrix multiplies (int8: of the parts not quantised)."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def _converted_model(self) -> EntropyModel:
        """CUDA bf16 runs the fp32 model under autocast (as before); the CPU gets a converted copy."""
        if self.device.type == "cuda" and self.precision == "bf16":
            return self.model
        return convert_model(self.model, self.precision, device=self.device)

    def score(self, docs: Sequence[bytes]) -> list[np.ndarray]:
        """Per document of n bytes, its n + 1 entropies H[0..n] (float32, nats)."""
        return self._run(docs, lambda logits, next_tokens: entropies_from_logits(logits))

    def nll(self, docs: Sequence[bytes]) -> list[np.ndarray]:
        """Per document of n bytes, the n + 1 losses (nats) of bytes b0..b(n-1) and then EOS."""
        return self._run(docs, nll_from_logits)

    def _run(self, docs: Sequence[bytes], per_position: Callable) -> list[np.ndarray]:
        started = time.perf_counter()
        lengths = [len(d) + 1 for d in docs]  # BOS + bytes
        results: list[np.ndarray] = [None] * len(docs)
        with torch.inference_mode():
            for batch in plan_batches(lengths, self.batch_bytes, self.chunk_len):
                for index, values in zip(batch, self._run_batch([docs[i] for i in batch], per_position)):
                    results[index] = values
        self.stats.documents += len(docs)
        self.stats.bytes += sum(lengths) - len(docs)
        self.stats.tokens += sum(lengths)
        self.stats.seconds += time.perf_counter() - started
        return results

    def _run_batch(self, docs: list[bytes], per_position: Callable) -> list[np.ndarray]:
        """Run one batch (docs sorted by ascending length) chunk by chunk with a KV cache."""
        tokens, lengths = _pad_tokens(docs)  # (B, bucket + 1): BOS, bytes, EOS, padding
        tokens = tokens.to(self.device)
        outputs = torch.empty(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.float32, device=self.device)
        cache, cache_first_row = KVCache.empty(self.model.config.n_layers), 0
        first_row, start, longest = 0, 0, tokens.shape[1] - 1
        while start < longest:
            while first_row < len(docs) and lengths[first_row] <= start:  # finished rows: a prefix, as sorted
                first_row += 1
            if first_row == len(docs):  # only padding is left
                break
            if first_row > cache_first_row:
                cache, cache_first_row = cache.select_rows(first_row - cache_first_row), first_row
            width = min(self.chunk_len, longest - start)
            chunk = tokens[first_row:, start:start + width + 1]
            logits = self._model_step(chunk[:, :width], start, cache)
            outputs[first_row:, start:start + width] = per_position(logits, chunk[:, 1:width + 1])
            self.stats.padded_tokens += chunk.shape[0] * width
            self.stats.steps += 1
            start += width
        self.stats.batches += 1
        outputs = outputs.cpu().numpy()  # one device-to-host copy per batch
        return [outputs[i, :lengths[i]].copy() for i in range(len(docs))]

    def _model_step(self, chunk: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        if self.device.type == "cuda" and self.precision == "bf16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self._forward(chunk, start_pos=start, cache=cache)
        return self._forward(chunk, start_pos=start, cache=cache)


def _precision(precision: str | None, dtype: torch.dtype | None, device: torch.device) -> str:
    """The engine's precision: ``precision`` (None/"auto": the device's default, see
    :func:`bltdata.device.default_precision`), or the older ``dtype`` spelling of it."""
    from bltdata.device import resolve_precision

    if dtype is not None:
        by_dtype = {torch.float32: "fp32", torch.bfloat16: "bf16"}
        if dtype not in by_dtype or (precision not in (None, "auto") and precision != by_dtype[dtype]):
            raise ValueError(f"dtype {dtype} does not name a precision (or contradicts precision={precision!r})")
        return by_dtype[dtype]
    return resolve_precision(precision, str(device))


def _warn_if_emulated(precision: str) -> None:
    """One warning when ``precision`` has no hardware unit on this CPU (it runs, but slowly)."""
    from bltdata.device import default_precision, emulated_precisions

    lacking = emulated_precisions().get(precision)
    if lacking and precision not in _WARNED:
        _WARNED.add(precision)
        logger.warning("this CPU has no %s unit (none of %s): %s scoring runs in emulated kernels, several times "
                       "slower than fp32; this CPU's default precision is %s", precision, lacking, precision,
                       default_precision("cpu"))


_WARNED: set[str] = set()


def _pad_tokens(docs: list[bytes]) -> tuple[torch.Tensor, np.ndarray]:
    """Right-padded ids ``[BOS] + bytes + [EOS]`` (B, bucket + 1) and per-row lengths n + 1."""
    lengths = np.array([len(d) + 1 for d in docs], dtype=np.int64)
    width = max(bucket_length(int(n)) for n in lengths)
    tokens = np.full((len(docs), width + 1), PAD_ID, dtype=np.int64)
    tokens[:, 0] = BOS_ID
    for row, data in enumerate(docs):
        tokens[row, 1:len(data) + 1] = np.frombuffer(data, dtype=np.uint8)
        tokens[row, 1:len(data) + 1] += OFFSET
        tokens[row, len(data) + 1] = EOS_ID
    return torch.from_numpy(tokens), lengths
