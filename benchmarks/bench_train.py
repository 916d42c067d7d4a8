"""BLT vs a plain byte-level transformer of matched training FLOPs, on the embedded corpus.

What it measures, in one run on this machine:

1. the embedded default corpus (this Python's stdlib sources + pydoc topics), cut to
   ``--corpus-bytes``, every ``--heldout-every``-th document held out;
2. entropy patches from the bundled default entropy model, θ calibrated on the training
   documents for a mean patch of ``--mean-patch`` bytes (4.5 by default), written as shards;
3. the BLT ``debug`` preset twice — its decoder reading patch(t+1) − 1 (the reference's
   wiring, the default) and patch(t) − 1 (the first wiring here) — and a byte-level
   transformer whose training FLOPs per byte are the closest to the BLT's at the measured
   mean patch (searched over width and depth), plain and with the BLT's hash n-gram
   embeddings (table lookups: no FLOPs, many parameters — this row separates the effect of
   patching from that of the embeddings);
4. each trained through the real shard loader for the same training-FLOP budget (so the
   same number of bytes when the FLOPs per byte match), scored on the held-out shards every
   ``--eval-every`` BLT-equivalent steps on the first ``--eval-batches-curve`` held-out
   batches (the curves: ``--plot PATH`` writes them as a PNG), and at the end on
   ``--eval-batches`` batches: training bytes/s, FLOPs/byte (training and inference),
   held-out BPB (the table's figure).

Run (CPU; `--threads 1` on a busy machine):

    python benchmarks/bench_train.py --steps 300 --threads 2
    python benchmarks/bench_train.py --steps 1200 --eval-every 150 --plot curves.png --json rows.json

Prints a Markdown table and, with ``--json PATH``, writes the rows and curves.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bltdata.blt.config import ByteTransformerConfig, debug
from bltdata.blt.data import eval_batches, train_loader
from bltdata.blt.distributed import Runtime
from bltdata.blt.evaluate import evaluate
from bltdata.blt.flops import flops_per_byte
from bltdata.blt.model import build_model, count_parameters
from bltdata.blt.runs import BltTrainConfig
from bltdata.blt.train import train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus-bytes", type=int, default=1_500_000)
    p.add_argument("--heldout-every", type=int, default=10)
    p.add_argument("--mean-patch", type=float, default=4.5)
    p.add_argument("--steps", type=int, default=300, help="BLT training steps; sets the FLOP budget")
    p.add_argument("--seq-len", type=int, default=513)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-batches", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=0, help="BLT steps between held-out evaluations (0: end only)")
    p.add_argument("--eval-batches-curve", type=int, default=10, help="held-out batches per curve point")
    p.add_argument("--plot", type=Path, default=None, help="write the held-out BPB curves to this PNG")
    p.add_argument("--only", default=None, help="comma-separated run indices to train, 0-3 (default: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=None, help="keep shards and runs here (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def corpus_split(max_bytes: int, every: int) -> tuple[list[bytes], list[bytes]]:
    from bltdata.corpus import default_corpus_files

    docs = [data for _, data in default_corpus_files(max_bytes) if data]
    return [d for i, d in enumerate(docs) if i % every], docs[::every]


def entropy_patch(train_docs, held_docs, mean_patch: float):
    """Score with the default entropy model, calibrate θ on the training docs, patch both splits."""
    from bltdata.entropy.calibrate import flat_entropies
    from bltdata.entropy.checkpoint import checkpoint_metadata, load_checkpoint
    from bltdata.entropy.engine import EntropyEngine
    from bltdata.patching import PatcherConfig, calibrate_threshold, patch_lengths

    engine = EntropyEngine(load_checkpoint("default"))
    started = time.perf_counter()
    train_h, held_h = engine.score(train_docs), engine.score(held_docs)
    seconds = time.perf_counter() - started
    flat, offsets = flat_entropies(train_h)
    theta = calibrate_threshold(flat, offsets, mean_patch, PatcherConfig())
    config = PatcherConfig(threshold=theta)
    patched = [[(d, patch_lengths(config, d, h)) for d, h in zip(docs, hs)]
               for docs, hs in ((train_docs, train_h), (held_docs, held_h))]
    info = {"theta": theta, "score_seconds": seconds, "entropy_model": checkpoint_metadata("default"),
            "patcher": config.to_dict()}
    return patched, info


def write_shard_dir(out: Path, docs, patcher: dict, entropy_model: dict) -> Path:
    from bltdata import shards

    out.mkdir(parents=True, exist_ok=True)
    writer = shards.ShardWriter(out / "part-00000.parquet", patcher=patcher, entropy_model=entropy_model)
    for i, (data, lengths) in enumerate(docs):
        writer.add(f"doc-{i}", "default-corpus", data, lengths)
    shards.write_manifest(out, {"benchmark": "bench_train"}, [writer.close()], 0, data_dir="", patcher=patcher,
                          entropy_model=entropy_model)
    return out


def prepare_shards(workdir: Path, args) -> tuple[Path, Path, dict]:
    """Entropy-patched train / held-out shards in ``workdir`` (reused when made with the same settings)."""
    key = {"corpus_bytes": args.corpus_bytes, "heldout_every": args.heldout_every, "mean_patch": args.mean_patch}
    info_file = workdir / "shards.json"
    if info_file.is_file() and json.loads(info_file.read_text())["key"] == key:
        return workdir / "train", workdir / "heldout", json.loads(info_file.read_text())["info"]
    train_docs, held_docs = corpus_split(args.corpus_bytes, args.heldout_every)
    (train_patched, held_patched), info = entropy_patch(train_docs, held_docs, args.mean_patch)
    write_shard_dir(workdir / "train", train_patched, info["patcher"], info["entropy_model"])
    write_shard_dir(workdir / "heldout", held_patched, info["patcher"], info["entropy_model"])
    info["mean_patch"] = sum(len(d) for d, _ in train_patched) / sum(len(p) for _, p in train_patched)
    info_file.write_text(json.dumps({"key": key, "info": info}, indent=1))
    return workdir / "train", workdir / "heldout", info


def matched_baseline(target_train_flops: float, seq_len: int) -> ByteTransformerConfig:
    """The byte transformer (dim multiple of 32, 1-12 layers) closest in training FLOPs per byte."""
    best, best_gap = None, float("inf")
    for dim in range(64, 513, 32):
        for n_layers in range(1, 13):
            config = ByteTransformerConfig(dim=dim, n_layers=n_layers, n_heads=max(1, dim // 32), max_seqlen=seq_len)
            gap = abs(flops_per_byte(config, seq_len).training_per_byte / target_train_flops - 1)
            if gap < best_gap or (gap == best_gap and n_layers > best.n_layers):
                best, best_gap = config, gap
    return best


def run_model(name, config, shards_dir, held_dir, steps, args, mean_patch, workdir, eval_every=0) -> dict:
    rt = Runtime()
    cfg = BltTrainConfig(steps=steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                         warmup_steps=max(1, steps // 10), log_every=max(1, steps // 10),
                         eval_every=eval_every, eval_batches=args.eval_batches_curve,
                         checkpoint_every=0, checkpoint_minutes=0)  # timed: one checkpoint, at the end
    loader = train_loader([str(shards_dir)], cfg.seq_len, cfg.batch_size, rt)
    totals = {"bytes": 0, "patches": 0, "seconds": 0.0}
    flops = flops_per_byte(config, cfg.seq_len - 1, mean_patch)
    curve = []

    def on_step(record):
        totals["bytes"] += record["bytes"]
        totals["patches"] += record["patches"]
        totals["seconds"] += record["seconds"]
        if "eval" in record and record["step"] < steps:
            curve.append({"step": record["step"], "train_flops": flops.training_per_byte * totals["bytes"],
                          "heldout_bpb": record["eval"]["bpb"]})

    shutil.rmtree(workdir / name, ignore_errors=True)  # a fresh run each time
    held = lambda: eval_batches(str(held_dir), cfg.seq_len, cfg.batch_size, rt)  # noqa: E731
    started = time.perf_counter()
    train(config, cfg, loader, workdir / name, rt, on_step=on_step, mean_patch=mean_patch,
          eval_data=held if eval_every else None)
    from bltdata.blt.checkpoint import load_model

    model, _ = load_model(workdir / name)
    final = evaluate(model, held(), "cpu", args.eval_batches)
    if eval_every:  # the curve's last point on the curve's batches (the first ones), like every other point
        last = evaluate(model, held(), "cpu", args.eval_batches_curve)
        curve.append({"step": steps, "train_flops": flops.training_per_byte * totals["bytes"], "heldout_bpb": last["bpb"]})
    with torch.device("meta"):
        params = count_parameters(build_model(config), embeddings=False)
    return {"model": name, "params_non_embedding": params, "steps": steps,
            "train_flops_per_byte": flops.training_per_byte, "inference_flops_per_byte": flops.inference_per_byte,
            "train_bytes": totals["bytes"], "train_flops": flops.training_per_byte * totals["bytes"],
            "bytes_per_s": totals["bytes"] / totals["seconds"], "wall_seconds": time.perf_counter() - started,
            "patches_per_s": totals["patches"] / totals["seconds"] if config.kind == "blt" else None,
            "heldout_bpb": final["bpb"], "heldout_bytes": final["bytes"], "curve": curve}


def plot(rows: list[dict], path: Path, info: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.plot([p["train_flops"] for p in r["curve"]], [p["heldout_bpb"] for p in r["curve"]], marker="o",
                markersize=3, label=r["model"])
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title(f"matched training FLOPs per byte; mean patch {info['mean_patch']:.2f} bytes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(rows: list[dict], info: dict) -> str:
    head = ("| model | non-emb. params | train FLOPs/byte | infer. FLOPs/byte | steps | train bytes | "
            "train FLOPs | bytes/s | patches/s | held-out BPB |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        patches = f"{r['patches_per_s']:,.0f}" if r["patches_per_s"] else "–"
        lines.append(f"| {r['model']} | {r['params_non_embedding'] / 1e6:.2f}M | {r['train_flops_per_byte'] / 1e6:.2f}M "
                     f"| {r['inference_flops_per_byte'] / 1e6:.2f}M | {r['steps']} | {r['train_bytes']:,} "
                     f"| {r['train_flops']:.3g} | {r['bytes_per_s']:,.0f} | {patches} | {r['heldout_bpb']:.3f} |")
    lines.append(f"\nmean patch {info['mean_patch']:.2f} bytes (θ = {info['theta']:.4f} nats, default entropy "
                 f"model); held-out {rows[0]['heldout_bytes']:,} bytes; seq_len {info['seq_len']}, "
                 f"batch {info['batch_size']}; torch threads {torch.get_num_threads()}")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_train_"))
    shards_dir, held_dir, info = prepare_shards(workdir, args)
    info.update(seq_len=args.seq_len, batch_size=args.batch_size)
    blt_config = replace(debug(), max_seqlen=args.seq_len)
    blt_flops = flops_per_byte(blt_config, args.seq_len - 1, info["mean_patch"]).training_per_byte
    byte_config = matched_baseline(blt_flops, args.seq_len - 1)
    byte_flops = flops_per_byte(byte_config, args.seq_len - 1).training_per_byte
    byte_steps = max(1, round(args.steps * blt_flops / byte_flops))  # same training-FLOP budget
    hashed_config = replace(byte_config, hash_table_size=blt_config.hash_table_size)  # same FLOPs: lookups only
    name = f"byte transformer d{byte_config.dim}×{byte_config.n_layers}"
    byte_eval = max(1, round(args.eval_every * blt_flops / byte_flops)) if args.eval_every else 0
    runs = [("BLT debug, decoder reads patch(t+1)-1", blt_config, args.steps, args.eval_every),
            ("BLT debug, decoder reads patch(t)-1", replace(blt_config, decoder_source="previous_patch"),
             args.steps, args.eval_every),
            (name, byte_config, byte_steps, byte_eval), (f"{name} + hash n-grams", hashed_config, byte_steps, byte_eval)]
    if args.only:
        keep = [int(i) for i in args.only.split(",")]
        runs = [run for i, run in enumerate(runs) if i in keep]
    rows = []
    for label, config, steps, every in runs:
        rows.append(run_model(label, config, shards_dir, held_dir, steps, args, info["mean_patch"], workdir, every))
        print(f"{label}: held-out {rows[-1]['heldout_bpb']:.4f} BPB after {steps} steps "
              f"({rows[-1]['wall_seconds']:.0f} s)", flush=True)
        if args.json:  # partial results survive an interrupted run
            args.json.write_text(json.dumps({"rows": rows, "info": info}, indent=2, default=str))
        if args.plot:
            plot(rows, args.plot, info)
    print(markdown(rows, info))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "info": info}, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
