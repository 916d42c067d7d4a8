"""`bltdata train`, `bltdata eval`, `bltdata generate`: the BLT on patched shards.

Thin commands over `bltdata.blt`: they read the distributed environment once (torchrun),
build the loaders, draw the progress bar and turn library errors into click errors.
"""
import json
import os
import sys

import click

from bltdata.device import resolve_device, set_threads  # torch is imported only when they run

PRESET_NAMES = ("debug", "blt-1b", "blt-7b", "byte-debug")  # = bltdata.blt.config.PRESETS (checked by a test)


def _device(name: str) -> str | None:
    """None for `auto` (training then picks cuda:LOCAL_RANK or cpu itself), else the checked device."""
    if name == "auto":
        return None
    try:
        return resolve_device(name)
    except RuntimeError as err:
        raise click.UsageError(str(err)) from None


device_option = click.option("--device", default="auto", show_default=True,
                             help="cpu, cuda, cuda:N or auto (cuda:LOCAL_RANK when available).")
threads_option = click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")


def _library_errors():
    """Errors the library raises for bad input: shown as click errors naming the file/record."""
    from bltdata.data.state import StateError

    return (FileNotFoundError, FileExistsError, ValueError, StateError)


@click.command("train")
@click.option("--data", multiple=True, metavar="DIR[=WEIGHT]",
              help="Shard directory (with manifest.json); repeat to mix, weighted by bytes.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="debug", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per row (the model reads seq-len - 1 and predicts the next token of each).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Rows per process.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True, help="Warmup steps.")
@click.option("--eval-data", metavar="DIR", help="Held-out shard directory for periodic bits per byte.")
@click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Steps between held-out evaluations (0: at the end only).")
@click.option("--eval-batches", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=100, show_default=True,
              help="Steps between checkpoints (0: none by steps). The last step, Ctrl-C and SIGTERM always save.")
@click.option("--checkpoint-minutes", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Also checkpoint after this many minutes of wall time since the last one (0: off).")
@click.option("--sharding", type=click.Choice(["auto", "ddp", "fsdp"]), default="auto", show_default=True,
              help="Multi-process strategy under torchrun (auto: fsdp for blt-1b and blt-7b, else ddp).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Loader processes per rank.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly (its saved settings win).")
@device_option
@threads_option
def train(data, run_dir, preset, steps, seq_len, batch_size, lr, warmup, eval_data, eval_every, eval_batches,
          checkpoint_every, checkpoint_minutes, sharding, workers, seed, resume, device, threads):
    """Train a BLT (or the byte-level baseline) on patched shards.

    Prints the model's size and FLOPs per byte, then a progress bar with loss, bits per
    byte, bytes/s and patches/s. Checkpoints (model, optimizer, schedule, RNG, loader
    position) go to RUN_DIR/checkpoints every --checkpoint-every steps or --checkpoint-minutes,
    at the end, and on Ctrl-C / SIGTERM (then the command exits with 130 / 143 and prints
    how to resume); the newest two are kept. `--resume` continues exactly where the last
    one stopped, with the run's saved settings; it fails when the run has no checkpoint or
    is already finished. Multi-GPU / multi-node: launch the same command with `torchrun`.

    \b
    Example:
      bltdata train --data shards/ --eval-data heldout/ -o runs/debug --preset debug --steps 200
      bltdata train --data shards/ -o runs/debug --resume
      torchrun --nproc-per-node 8 --no-python bltdata train --data shards/ -o runs/1b --preset blt-1b
    """
    from bltdata.blt import train as blt_train
    from bltdata.blt.runs import BltTrainConfig
    from bltdata.blt.checkpoint import read_run
    from bltdata.blt.config import config_from_dict, preset as make_preset
    from bltdata.blt.data import manifest_summary, train_loader
    from bltdata.blt.distributed import runtime_from_env

    set_threads(threads)
    if resume:
        data, preset_config, cfg = _resumed_settings(run_dir, data, read_run, config_from_dict, blt_train)
        _check_resume(run_dir, cfg, steps)
    else:
        if not data:
            raise click.UsageError("--data is required (a shard directory, repeatable)")
        preset_config = make_preset(preset)
        cfg = _train_config(BltTrainConfig, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                            warmup_steps=warmup, eval_every=eval_every, eval_batches=eval_batches,
                            checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes, seed=seed,
                            sharding=(("fsdp" if preset in ("blt-1b", "blt-7b") else "ddp") if sharding == "auto" else sharding))
    rt = runtime_from_env(_device(device))
    try:
        summary = manifest_summary(data)
        loader = train_loader(data, cfg.seq_len, cfg.batch_size, rt, seed=cfg.seed, num_workers=workers)
        eval_fn = _eval_fn(eval_data, cfg, rt)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    mean_patch = summary["mean_patch"] or 4.5
    if rt.rank == 0:
        click.echo(blt_train.describe_model(preset_config, cfg.seq_len, mean_patch))
    records = _run_with_bar(blt_train.train, preset_config, cfg, loader, run_dir, rt, eval_fn, resume,
                            {**summary, "eval_data": eval_data}, mean_patch)
    if rt.rank == 0 and records:
        _print_final(records[-1], run_dir)


def _train_config(cls, **kw):
    try:
        return cls(**kw)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def _resumed_settings(run_dir, data, read_run, config_from_dict, blt_train):
    from bltdata.blt.runs import BltTrainConfig

    try:
        run = read_run(run_dir)
    except FileNotFoundError as err:
        raise click.ClickException(f"--resume: {err}") from None
    saved_data = run["data"].get("sources", [])
    if data and list(data) != saved_data:
        raise click.UsageError(f"--resume: the run was trained on {saved_data}, not {list(data)}")
    return saved_data, config_from_dict(run["model"]), BltTrainConfig(**run["train"])


def _check_resume(run_dir, cfg, steps) -> None:
    """Say where --resume starts, or fail: no checkpoint, a finished run, or a --steps that differs."""
    from bltdata.blt.checkpoint import resume_point

    if click.get_current_context().get_parameter_source("steps").name != "DEFAULT" and steps != cfg.steps:
        raise click.UsageError(f"--resume: the run's schedule is {cfg.steps} steps; --steps {steps} cannot change it "
                               f"(train longer in a new run directory)")
    try:
        path, done = resume_point(run_dir)
    except FileNotFoundError as err:
        raise click.ClickException(f"--resume: {err}") from None
    if done >= cfg.steps:
        raise click.ClickException(f"--resume: {run_dir} is already finished (step {done} of {cfg.steps}); "
                                   f"nothing to do")
    if os.environ.get("RANK", "0") == "0":  # torchrun: once, not per rank
        click.echo(f"resuming {run_dir} from step {done} of {cfg.steps} ({path})", err=True)


def _eval_fn(eval_data, cfg, rt):
    if not eval_data:
        return None
    from bltdata.blt.data import eval_batches
    from bltdata.shards import read_manifest

    read_manifest(eval_data)  # fail now, not at the first evaluation
    return lambda: eval_batches(eval_data, cfg.seq_len, cfg.batch_size, rt)


def _run_with_bar(train_fn, model_config, cfg, loader, run_dir, rt, eval_fn, resume, data_info, mean_patch):
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, desc="train", unit="step", dynamic_ncols=True, disable=rt.rank != 0)
    totals = {"bytes": 0, "patches": 0, "seconds": 1e-9}  # throughput over the steps of this process

    def on_step(record):
        for key in totals:
            totals[key] += record[key]
        bar.update(record["step"] - bar.n)
        bar.set_postfix(loss=f"{record['loss']:.3f}", bpb=f"{record['bpb']:.3f}",
                        bytes_s=f"{totals['bytes'] / totals['seconds']:,.0f}",
                        patches_s=f"{totals['patches'] / totals['seconds']:,.0f}")
        if "eval" in record:
            bar.write(f"step {record['step']}: held-out {record['eval']['bpb']:.4f} bits/byte "
                      f"({record['eval']['bytes']:,} bytes)")

    from bltdata.interrupt import StopRequest, TrainingInterrupted

    try:
        with StopRequest() as stop:
            return train_fn(model_config, cfg, loader, run_dir, rt, eval_data=eval_fn, resume=resume,
                            on_step=on_step, data_info=data_info, mean_patch=mean_patch, should_stop=stop)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    except TrainingInterrupted as stopped:
        bar.close()
        if rt.rank == 0:
            click.echo(f"{stopped}\nresume with: bltdata train -o {run_dir} --resume", err=True)
        sys.exit(stopped.exit_code)
    finally:
        bar.close()


def _print_final(record, run_dir) -> None:
    held = f", held-out {record['eval']['bpb']:.4f} bits/byte" if "eval" in record else ""
    click.echo(f"{run_dir}: step {record['step']}, train loss {record['loss']:.4f} nats "
               f"({record['bpb']:.4f} bits/byte){held}")


@click.command("eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, metavar="DIR", help="Held-out shard directory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=2), help="Tokens per row [default: the run's].")
@click.option("--max-batches", type=click.IntRange(min=1), help="Stop after this many batches [default: all].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@device_option
@threads_option
def eval_(run_dir, data, batch_size, seq_len, max_batches, as_json, device, threads):
    """Bits per byte of a trained run on held-out shards.

    BPB = Σ cross-entropy (nats) over predicted tokens / ln 2 / their number. Every byte
    and every EOS is predicted (EOS counts as a byte, as in the reference BLT); BOS
    (a document start inside a packed row) and padding are not.

    \b
    Example:
      bltdata eval runs/debug --data heldout/
      bltdata eval runs/debug --data heldout/ --json --max-batches 50
    """
    from bltdata.blt.checkpoint import latest_checkpoint, load_model
    from bltdata.blt.data import eval_batches
    from bltdata.blt.distributed import Runtime
    from bltdata.blt.evaluate import evaluate

    set_threads(threads)
    dev = _device(device) or _auto_device()
    try:
        model, run = load_model(run_dir, dev)
        seq_len = seq_len or run["train"]["seq_len"]
        result = evaluate(model, eval_batches(data, seq_len, batch_size, Runtime(device=dev)), dev, max_batches)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    result = {**result, "run": run_dir, "checkpoint": latest_checkpoint(run_dir).name, "data": data,
              "eos_counted": True}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{run_dir} ({result['checkpoint']}) on {data}: {result['bpb']:.4f} bits/byte over "
                   f"{result['bytes']:,} predicted bytes ({result['batches']} batches; EOS counted as a byte)")


def _auto_device() -> str:
    return resolve_device("auto")


@click.command("generate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", default="", help="Text to continue (UTF-8).")
@click.option("--entropy-model", metavar="DIR|default",
              help="Entropy model that forms the patches (entropy patching only) "
                   "[default: the run's own (an imported release ships one), else the bundled model].")
@click.option("--max-bytes", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True, help="0: greedy.")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample among the k most likely bytes.")
@click.option("--threshold", type=float, help="Entropy threshold θ [default: the training shards'].")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@threads_option
def generate(run_dir, prompt, entropy_model, max_bytes, temperature, top_k, threshold, seed, device, threads):
    """Continue a prompt byte by byte, patching on the fly like the training data.

    The patcher (mode, θ, max patch length) is the one recorded in the training shards'
    manifest; entropy modes score the growing text with --entropy-model.

    \b
    Example:
      bltdata generate runs/debug --prompt "def main(" --max-bytes 120
      bltdata generate runs/debug --entropy-model models/mine --prompt "The " --temperature 0.8 --top-k 20
    """
    from bltdata.blt.checkpoint import load_model
    from bltdata.blt.generate import GenerationConfig, generate as run_generate

    set_threads(threads)
    dev = _device(device) or _auto_device()
    try:
        model, run = load_model(run_dir, dev)
        patcher = _patcher(run, entropy_model or _run_entropy_model(run_dir, run), threshold, dev)
        config = GenerationConfig(max_bytes=max_bytes, temperature=temperature, top_k=top_k, seed=seed)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    out = sys.stdout.buffer
    out.write(prompt.encode("utf-8"))
    result = run_generate(model, prompt.encode("utf-8"), patcher, config, dev,
                          on_byte=lambda b: (out.write(bytes([b])), out.flush()))
    out.write(b"\n")
    out.flush()
    n = len(prompt.encode("utf-8")) + len(result.text)
    click.echo(f"[{len(result.text)} bytes generated, stop: {result.stop}, {len(result.patch_lengths)} patches "
               f"(mean {n / max(len(result.patch_lengths), 1):.2f} bytes)]", err=True)


def _run_entropy_model(run_dir: str, run: dict) -> str:
    """The run's own entropy model (``run.json`` "entropy_model", relative to the run), else the bundled one."""
    from pathlib import Path

    own = run.get("entropy_model")
    return str(Path(run_dir) / own) if own else "default"


def _patcher(run: dict, entropy_model: str, threshold, device):
    from dataclasses import replace

    from bltdata.blt.generate import make_patcher
    from bltdata.patching import PatcherConfig

    if run["model"].get("kind") == "byte":
        from bltdata.blt.generate import whole_text_patch

        return whole_text_patch  # the byte-level baseline reads no patches
    saved = (run.get("data") or {}).get("patcher")
    if not saved:
        raise ValueError("the run records no patcher (its training manifest has none); cannot form patches")
    config = PatcherConfig.from_dict(saved)
    if config.mode in ("entropy", "monotonic"):  # the BLT learnt the shards' θ: only --threshold overrides it
        source = "--threshold" if threshold is not None else "the training shards' manifest"
        config = replace(config, threshold=config.threshold if threshold is None else threshold)
        click.echo(f"patching: mode {config.mode}, θ = {config.threshold:.6g} ({source})", err=True)
    engine = None
    if config.needs_entropies:
        from bltdata.entropy.checkpoint import load_checkpoint
        from bltdata.entropy.engine import EntropyEngine

        engine = EntropyEngine(load_checkpoint(entropy_model, device=device), device=device)
    return make_patcher(config, engine)


COMMANDS = [train, eval_, generate]
