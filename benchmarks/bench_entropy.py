"""Throughput of the entropy engine beside two simpler ways of scoring the same documents.

Methods, all on the same documents in the same run:

- ``engine``    — :class:`bltdata.entropy.engine.EntropyEngine`: length-bucketed batches under a
                  byte budget, long documents chunked with a KV cache (exact).
- ``alone``     — (a) a naive loop: each document run by itself (long ones chunked with the
                  same KV cache, so only the batching differs).
- ``pad8192``   — (b) the reference's preprocessing: every document padded to 8192 bytes and
                  run one at a time; longer ones split into independent 8192-byte windows.

Corpora (text cut from the embedded default corpus, seeded): ``short`` — many short
documents (log-normal lengths, median ~400 bytes, at most 4 KB); ``mixed`` — the same plus a
few long documents (20–120 KB) holding ~30 % of the bytes; ``snippets`` — very short documents
(median ~100 bytes, at most 512: titles, chat turns, code snippets), where a per-document loop
pays its per-call overhead most often. ``alone`` and ``pad8192`` run on a
sample of the documents until their time budget is spent — in an order whose every prefix
spreads evenly over the length distribution (:func:`spread_order`), so a partial run sees the
corpus's mix of lengths rather than a lucky or unlucky draw; bytes/s counts real bytes only
(per wall second, or per CPU second of this process with ``--cpu-time``).

Precisions: the engine runs in each of ``--precisions`` (fp32, bf16, int8; see
:mod:`bltdata.entropy.precision`); the two baselines run in fp32, the precision they had.
Each engine row gives its speed as a multiple of the per-document fp32 loop (``alone``) and of
pad-to-8192, the boundary agreement with the fp32 engine (Jaccard index of the patch starts
over the corpus, entropy mode, θ = the bundled model's recommended θ for ``small``, else the
θ giving 4.5-byte patches on the fp32 entropies; entropies rounded to float16 as the pipeline
patches them) and the mean patch length. ``small`` is the bundled, trained model; ``tiny`` and
``paper-100m`` are randomly initialised (their boundary figures say less).

Roofline: each row also gives the useful model FLOP rate (matrix multiplies of the real
positions, :func:`bltdata.entropy.model.forward_flops`; padding not counted) as a share of
this machine's measured matrix-multiply peak *in that row's precision* (best of three shapes
on the same threads: ``torch.mm`` in fp32 and bf16, ``torch._int_mm`` for int8). A method at
x % of its peak cannot be sped up by more than 100/x by any batching. A precision the CPU has
no unit for (bf16 without AVX512-BF16/AMX, int8 without VNNI: :func:`bltdata.device.emulated_precisions`)
runs in emulated kernels whose speed is no ceiling: the table says so and gives no peak or share.

On CUDA it also measures ``paper-100m`` in bf16 and its model FLOP utilisation,
2 · parameters · bytes/s ÷ peak.

    python benchmarks/bench_entropy.py     # CPU: tiny + small (3 corpora), paper-100m (256 KB of `short`)
    python benchmarks/bench_entropy.py --threads 1 --cpu-time   # on a busy shared machine
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time

import numpy as np
import torch

from bltdata.entropy.engine import EntropyEngine, entropies_from_logits
from bltdata.entropy.model import PRESETS, EntropyModel, KVCache, forward_flops, preset
from bltdata.ids import bytes_to_ids

REFERENCE_LEN = 8192


def make_corpus(kind: str, total_bytes: int, seed: int = 0) -> list[bytes]:
    """Documents of realistic mixed lengths cut from the default corpus text."""
    from bltdata.corpus import default_corpus_files

    text = b"\n".join(data for _, data in default_corpus_files(max(4 * total_bytes, 1 << 20)))
    rng = np.random.default_rng(seed)
    lengths = []
    if kind == "mixed":
        while sum(lengths) < 0.3 * total_bytes:
            lengths.append(int(rng.integers(20_000, 120_000)))
    median, longest = (100, 512) if kind == "snippets" else (400, 4096)
    while sum(lengths) < total_bytes:
        lengths.append(int(np.clip(rng.lognormal(np.log(median), 1.0), 16, longest)))
    rng.shuffle(lengths)
    starts = rng.integers(0, len(text) - max(lengths), len(lengths))
    return [text[s:s + n] for s, n in zip(starts, lengths)]


def spread_order(lengths) -> np.ndarray:
    """Indices whose every prefix samples the length distribution evenly.

    Documents are ranked by length and taken at golden-ratio steps through the ranks, so the
    first k cover all lengths about equally (stratified rather than random sampling).
    """
    by_length = np.argsort(np.asarray(lengths), kind="stable")
    steps = (np.arange(len(by_length)) * 0.6180339887498949) % 1.0
    return by_length[np.argsort(steps, kind="stable")]


def matmul_peak_gflops(device="cpu", n: int = 2048, dtype=torch.float32, repeats: int = 10) -> float:
    """Best-of-``repeats`` rate of an n×n×n ``torch.mm`` (GFLOP/s): the machine's practical peak."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e9


def useful_flops(config, docs) -> float:
    """Model FLOPs of scoring ``docs`` (n + 1 positions each), padding excluded."""
    return sum(forward_flops(config, len(d) + 1) for d in docs)


def run_engine(model, docs, device, batch_bytes, chunk_len, compile_model=False, precision=None) -> dict:
    engine = EntropyEngine(model, device=device, batch_bytes=batch_bytes, chunk_len=chunk_len, compile=compile_model,
                           precision=precision)
    by_length = sorted(docs, key=len)  # warm-up (and compilation) on every kind of chunk: short, dense, local, cached
    engine.score([by_length[int(q * (len(docs) - 1))] for q in (0.0, 0.25, 0.5, 0.75, 0.95, 1.0)])
    engine.stats.__init__()
    _sync(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    entropies = engine.score(docs)
    _sync(device)
    return {"bytes": engine.stats.bytes, "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started, "padding_waste": engine.stats.padding_waste,
            "docs": len(docs), "flops": useful_flops(model.config, docs), "entropies": entropies}


def run_alone(model, docs, device, chunk_len, budget_s) -> dict:
    """(a): one document per forward pass; long documents chunked with the KV cache."""
    done, total, started, cpu_started = 0, 0, time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for data in docs:
            ids = torch.from_numpy(bytes_to_ids(data)).to(device)[None]
            cache = KVCache.empty(model.config.n_layers)
            for start in range(0, ids.shape[1], chunk_len):
                entropies_from_logits(model(ids[:, start:start + chunk_len], start_pos=start, cache=cache)).cpu()
            done, total = done + 1, total + len(data)
            if time.process_time() - cpu_started > budget_s:
                break
    _sync(device)
    return {"bytes": total, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "padding_waste": 0.0, "docs": done, "flops": useful_flops(model.config, docs[:done])}


def run_pad8192(model, docs, device, budget_s) -> dict:
    """(b): every document padded to 8192, longer ones cut into independent 8192 windows."""
    done, total, windows, started, cpu_started = 0, 0, 0, time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for data in docs:
            ids = bytes_to_ids(data)
            for start in range(0, len(ids), REFERENCE_LEN):
                window = np.zeros(REFERENCE_LEN, dtype=np.int64)
                piece = ids[start:start + REFERENCE_LEN]
                window[:len(piece)] = piece
                entropies_from_logits(model(torch.from_numpy(window).to(device)[None])).cpu()
                windows += 1
            done, total = done + 1, total + len(data)
            if time.process_time() - cpu_started > budget_s:
                break
    _sync(device)
    tokens = total + done
    return {"bytes": total, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "padding_waste": 1 - tokens / (windows * REFERENCE_LEN), "docs": done,
            "flops": useful_flops(model.config, docs[:done])}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


PRECISIONS = ("fp32", "bf16", "int8")
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 256, 768), (4096, 768, 256))  # (M, K, N)


def matmul_peaks_cpu(precisions=PRECISIONS, repeats: int = 10) -> dict[str, float]:
    """Best GFLOP/s of a CPU matrix multiply per precision, over :data:`PEAK_SHAPES`.

    fp32 and bf16: ``torch.mm``; int8: ``torch._int_mm`` (int8 × int8 → int32, VNNI), the
    kernel the ``int8`` precision runs. Each row's useful FLOP rate is divided by the peak
    of its own precision.
    """
    peaks = {}
    for precision in ("fp32", *(p for p in precisions if p != "fp32")):  # fp32: the baselines' peak
        best = 0.0
        for m, k, n in PEAK_SHAPES:
            if precision == "int8":
                a, b = (torch.randint(-127, 128, shape, dtype=torch.int8) for shape in ((m, k), (k, n)))
                op = torch._int_mm
            else:
                dtype = torch.float32 if precision == "fp32" else torch.bfloat16
                a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
                op = torch.mm
            best = max(best, 2 * m * k * n / _best_time(lambda: op(a, b), repeats) / 1e9)
        peaks[precision] = best
    return peaks


def _best_time(fn, repeats: int) -> float:
    fn(), fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def patch_stats(docs, entropies, threshold: float):
    """Boundary sets (one int array of global byte offsets) and the mean patch length, on
    entropies rounded to float16 as the pipeline patches them."""
    from bltdata.patching import PatcherConfig, patch_lengths

    config = PatcherConfig(mode="entropy", threshold=threshold)
    starts, base, patches = [], 0, 0
    for data, h in zip(docs, entropies):
        lengths = patch_lengths(config, data, h.astype(np.float16).astype(np.float32))
        starts.append(base + np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, np.int64))
        base, patches = base + len(data), patches + len(lengths)
    return np.concatenate(starts), base / max(patches, 1)


def boundary_agreement(starts, reference) -> float:
    """|B ∩ B_fp32| / |B ∪ B_fp32| over the patch starts of the corpus (1.0: identical patches)."""
    union = np.union1d(starts, reference).size
    return np.intersect1d(starts, reference).size / union if union else 1.0


def threshold_for(preset_name: str, docs, fp32_entropies) -> float:
    """The bundled model's recommended θ for ``small``; for the random presets the θ giving
    4.5-byte patches on the fp32 entropies (the same θ for every precision)."""
    if preset_name == "small":
        from bltdata.entropy.checkpoint import read_config

        return read_config("default")["recommended_threshold"]
    from bltdata.patching import PatcherConfig, calibrate_threshold

    flat = np.concatenate([h[:-1] for h in fp32_entropies]).astype(np.float16).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    return calibrate_threshold(flat, offsets, 4.5, PatcherConfig(mode="entropy"))


def cpu_model(preset_name: str):
    """``small`` is the bundled, trained model; the other presets are randomly initialised."""
    if preset_name == "small":
        from bltdata.entropy.checkpoint import load_checkpoint

        return load_checkpoint("default")
    model = EntropyModel(preset(preset_name)).eval()
    model.reset_parameters(seed=0)
    return model


def bench_cpu(args) -> list[dict]:
    from bltdata.device import emulated_precisions

    args.emulated = {p: why for p, why in emulated_precisions().items() if p in args.precisions}
    peaks = matmul_peaks_cpu([p for p in args.precisions if p not in args.emulated])
    print("matmul peaks (best of " + ", ".join("×".join(map(str, s)) for s in PEAK_SHAPES)
          + f"; {torch.get_num_threads()} threads): "
          + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    for precision, why in args.emulated.items():
        print(f"this CPU has no {precision} unit (none of {why}): {precision} runs in emulated kernels here, so "
              f"its rows show this machine, not the precision; no {precision} peak (it would be no ceiling)", flush=True)
    if args.emulated:  # the line above says what the engine's own warning would repeat per precision
        logging.getLogger("bltdata.entropy.engine").setLevel(logging.ERROR)
    print("| preset | corpus | method | docs | bytes/s | × alone fp32 | × pad8192 | useful FLOP rate | "
          "share of its precision's peak | boundary agreement with fp32 | mean patch | padding |")
    rows = []
    for preset_name in args.presets:
        model = cpu_model(preset_name)
        corpus_bytes = args.paper_bytes if preset_name == "paper-100m" else args.corpus_bytes
        for kind in (args.paper_corpora if preset_name == "paper-100m" else args.corpora):
            docs = make_corpus(kind, corpus_bytes, seed=1)
            rows += bench_cpu_corpus(args, model, preset_name, kind, docs, peaks)
    return rows


def bench_cpu_corpus(args, model, preset_name, kind, docs, peaks) -> list[dict]:
    """One preset × corpus: the engine in each precision beside the fp32 per-document loop
    and the fp32 pad-to-8192 preprocessing."""
    clock = "cpu_seconds" if args.cpu_time else "seconds"
    subset = [docs[i] for i in spread_order([len(d) for d in docs])]
    baselines = {"alone": run_alone(model, subset, "cpu", args.chunk_len, args.budget),
                 "pad8192": run_pad8192(model, subset, "cpu", args.budget)}
    speed = {name: r["bytes"] / r[clock] for name, r in baselines.items()}
    rows, reference, threshold = [], None, None
    for precision in args.precisions:
        r = run_engine(model, docs, "cpu", args.batch_bytes, args.chunk_len, precision=precision)
        if reference is None:  # fp32 runs first: the boundaries the others are compared with
            threshold = threshold_for(preset_name, docs, r["entropies"])
        starts, mean_patch = patch_stats(docs, r["entropies"], threshold)
        reference = starts if reference is None else reference
        bytes_per_s = r["bytes"] / r[clock]
        gflops = r["flops"] / r[clock] / 1e9
        rows.append({"device": "cpu", "preset": preset_name, "corpus": kind, "method": f"engine {precision}",
                     "precision": precision, "docs": r["docs"], "bytes": r["bytes"], "bytes_per_s": bytes_per_s,
                     "padding_waste": r["padding_waste"], "vs_alone_fp32": bytes_per_s / speed["alone"],
                     "vs_pad8192": bytes_per_s / speed["pad8192"], "gflops": gflops,
                     "peak_share": None if precision in args.emulated else gflops / peaks[precision],
                     "boundary_agreement": boundary_agreement(starts, reference),
                     "mean_patch": mean_patch, "threshold": threshold})
        print(_cpu_row(rows[-1]), flush=True)
    for name, r in baselines.items():
        gflops = r["flops"] / r[clock] / 1e9
        rows.append({"device": "cpu", "preset": preset_name, "corpus": kind, "method": f"{name} fp32",
                     "precision": "fp32", "docs": r["docs"], "bytes": r["bytes"], "bytes_per_s": speed[name],
                     "padding_waste": r["padding_waste"], "gflops": gflops, "peak_share": gflops / peaks["fp32"]})
        print(_cpu_row(rows[-1]), flush=True)
    return rows


def profile_engine(args) -> None:
    """torch.profiler's top operators of the bundled ``small`` model scoring the ``short`` corpus,
    per precision (self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    model, docs = cpu_model("small"), make_corpus("short", args.profile_bytes, seed=1)
    for precision in args.precisions:
        engine = EntropyEngine(model, device="cpu", batch_bytes=args.batch_bytes, chunk_len=args.chunk_len,
                               precision=precision)
        engine.score(docs[:20])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            engine.score(docs)
        print(f"small, {precision}, {sum(map(len, docs)):,} bytes of `short`:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows), flush=True)


def _share(share: float | None) -> str:
    return "— (emulated)" if share is None else f"{share:.0%}"


def _cpu_row(r: dict) -> str:
    ratios = (f"{r['vs_alone_fp32']:.2f}x | {r['vs_pad8192']:.1f}x" if "vs_alone_fp32" in r else " | ")
    patches = (f"{r['boundary_agreement']:.3f} | {r['mean_patch']:.2f}" if "mean_patch" in r else " | ")
    return (f"| {r['preset']} | {r['corpus']} | {r['method']} | {r['docs']} | {r['bytes_per_s'] / 1e3:.2f} kB/s | "
            f"{ratios} | {r['gflops']:.1f} GFLOP/s | {_share(r['peak_share'])} | {patches} | {r['padding_waste']:.1%} |")


def bench_cuda(args) -> list[dict]:
    model = EntropyModel(preset("paper-100m")).to("cuda").eval()
    params = model.num_params()
    docs = make_corpus("mixed", args.gpu_corpus_bytes, seed=3)
    peak = matmul_peak_gflops("cuda", n=8192, dtype=torch.bfloat16)
    print(f"bf16 matmul peak measured (8192² torch.mm): {peak / 1e3:.0f} TFLOP/s; "
          f"MFU below is against the spec peak, {args.peak_tflops:.0f} TFLOP/s")
    rows = []
    configs = [(b, c, False) for b in args.gpu_batch_bytes for c in args.gpu_chunk_len]
    if args.compile:
        configs.append((args.gpu_batch_bytes[0], args.gpu_chunk_len[0], True))
    for batch_bytes, chunk_len, compile_model in configs:
        r = run_engine(model, docs, "cuda", batch_bytes, chunk_len, compile_model)
        speed, gflops = r["bytes"] / r["seconds"], r["flops"] / r["seconds"] / 1e9
        method = f"engine b={batch_bytes} c={chunk_len}" + (" +compile" if compile_model else "")
        rows.append({"device": torch.cuda.get_device_name(), "preset": "paper-100m", "corpus": "mixed",
                     "method": method, "docs": r["docs"], "bytes": r["bytes"],
                     "bytes_per_s": speed, "padding_waste": r["padding_waste"],
                     "mfu": 2 * params * speed / (args.peak_tflops * 1e12),
                     "gflops": gflops, "peak_share": gflops / peak})
        print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict) -> str:
    extra = f" mfu {r['mfu']:.1%}" if "mfu" in r else f" engine {r['engine_speedup']:.1f}x"
    extra += f" | {r['gflops']:.1f} GFLOP/s, {r['peak_share']:.0%} of measured peak"
    return (f"| {r['device']} | {r['preset']} | {r['corpus']} | {r['method']} | {r['docs']} | "
            f"{r['bytes_per_s'] / 1e3:.1f} kB/s | waste {r['padding_waste']:.1%} |{extra}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper-100m"], choices=sorted(PRESETS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                        help="engine precisions (fp32 first: the others' boundaries are compared with it)")
    parser.add_argument("--corpora", nargs="+", default=["snippets", "short", "mixed"],
                        choices=["snippets", "short", "mixed"])
    parser.add_argument("--corpus-bytes", type=int, default=400_000)
    parser.add_argument("--paper-bytes", type=int, default=262_144, help="corpus size for paper-100m")
    parser.add_argument("--paper-corpora", nargs="+", default=["short"], choices=["snippets", "short", "mixed"])
    parser.add_argument("--batch-bytes", type=int, help="engine budget [default: the engine's CPU default]")
    parser.add_argument("--chunk-len", type=int, default=1024)
    parser.add_argument("--budget", type=float, default=12.0, help="CPU seconds per baseline (alone, pad8192)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="bytes per CPU second of this process (for shared machines; use with --threads 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--gpu-corpus-bytes", type=int, default=16_000_000)
    parser.add_argument("--gpu-batch-bytes", type=int, nargs="+", default=[1 << 19],
                        help="engine budgets to time on CUDA (each with every --gpu-chunk-len)")
    parser.add_argument("--gpu-chunk-len", type=int, nargs="+", default=[4096])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100/H200 SXM: 989)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile on CUDA (first budget and chunk length)")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the table: torch.profiler's top operators of `small` per precision")
    parser.add_argument("--profile-bytes", type=int, default=60_000)
    parser.add_argument("--profile-rows", type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    if args.profile:
        return profile_engine(args)
    rows = [] if args.no_cpu else bench_cpu(args)
    if torch.cuda.is_available():
        print("| device | preset | corpus | method | docs | bytes/s | padding | MFU | useful FLOP rate |")
        rows += bench_cuda(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
