"""`bltdata train`, `bltdata eval`, `bltdata generate`: the BLT on patched shards.

Thin commands over `bltdata.blt`: they read the distributed environment once (torchrun),
build the loaders, draw the progress bar and turn library errors into click errors.
"""
import json
import os
import sys

import click

from bltdata.blt.runs import PRESETS  # torch-free, like the rest of what is imported here
from bltdata.cli.progress import display_mode, progress_option
from bltdata.device import resolve_device, set_threads  # torch is imported only when they run

PRESET_NAMES = tuple(PRESETS)


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


FLAGS = {"warmup_steps": "--warmup"}  # a training setting's option when it is not --setting-name
PRESET_HELP = " [default: the preset's; see --show-preset]"


def _flag(setting: str) -> str:
    """The option of a training setting (an option name is returned as it is)."""
    return setting if setting.startswith("--") else FLAGS.get(setting, "--" + setting.replace("_", "-"))


@click.command("train")
@click.option("--data", multiple=True, metavar="DIR[=WEIGHT]",
              help="Shard directory (with manifest.json); repeat to mix, weighted by bytes.")
@click.option("-o", "--out", "run_dir", type=click.Path(file_okay=False), help="Run directory (required).")
@click.option("--preset", type=click.Choice(PRESET_NAMES),
              help="The run: model shape and every training default [default: debug].")
@click.option("--show-preset", type=click.Choice(PRESET_NAMES), metavar="NAME",
              help="Print the run NAME resolves to (with the options given here applied) as JSON, and exit.")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps." + PRESET_HELP)
@click.option("--seq-len", type=click.IntRange(min=2),
              help="Tokens per row (the model reads seq-len - 1 and predicts the next token of each)." + PRESET_HELP)
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per process." + PRESET_HELP)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (AdamW)." + PRESET_HELP)
@click.option("--warmup", type=click.IntRange(min=0), help="Warmup steps." + PRESET_HELP)
@click.option("--eval-data", metavar="DIR", help="Held-out shard directory for periodic bits per byte.")
@click.option("--eval-every", type=click.IntRange(min=0),
              help="Steps between held-out evaluations (0: at the end only)." + PRESET_HELP)
@click.option("--eval-batches", type=click.IntRange(min=1), help="Held-out batches per evaluation." + PRESET_HELP)
@click.option("--checkpoint-every", type=click.IntRange(min=0),
              help="Steps between checkpoints (0: none by steps). The last step, Ctrl-C and SIGTERM always save."
                   + PRESET_HELP)
@click.option("--checkpoint-minutes", type=click.FloatRange(min=0),
              help="Also checkpoint after this many minutes of wall time since the last one (0: off)." + PRESET_HELP)
@click.option("--sharding", type=click.Choice(["ddp", "fsdp"]),
              help="Multi-process strategy under torchrun (blt-1b and blt-7b: fsdp)." + PRESET_HELP)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Loader processes per rank.")
@click.option("--seed", type=int, help="Seed of the weights and the data order." + PRESET_HELP)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly; see RESUME below for the options "
                                             "it applies and those it refuses.")
@progress_option
@device_option
@threads_option
def train(data, run_dir, preset, show_preset, steps, seq_len, batch_size, lr, warmup, eval_data, eval_every,
          eval_batches, checkpoint_every, checkpoint_minutes, sharding, workers, seed, resume, progress, device,
          threads):
    """Train a BLT (or the byte-level baseline) on patched shards.

    A --preset is a whole run: the model shape and the defaults of every training
    option (steps, sequence, batch, learning rate and warmup, evaluation and checkpoint
    cadence, sharding); an option given here replaces the preset's value, and RUN_DIR/run.json
    records the resolved run. `--show-preset NAME` prints it. Prints the model's size and
    FLOPs per byte, then a progress bar with loss, bits per byte, bytes/s and patches/s.
    Checkpoints (model, optimizer, schedule, RNG, loader position) go to RUN_DIR/checkpoints
    every --checkpoint-every steps or --checkpoint-minutes, at the end, and on Ctrl-C /
    SIGTERM (then the command exits with 130 / 143 and prints how to resume); the newest two
    are kept. Multi-GPU / multi-node: launch the same command with `torchrun`.

    RESUME: `--resume` continues where the last checkpoint stopped, with the run's saved
    settings. It APPLIES --steps (to train longer: the cosine schedule is then stretched to
    the new end), --eval-every, --checkpoint-every, --checkpoint-minutes, --sharding,
    --workers, --device and --threads, and prints the saved settings it changed. It REFUSES (exit 2,
    naming the option and the run's value) a --preset, --data, --eval-data, --seq-len,
    --batch-size, --lr, --warmup, --eval-batches or --seed other than the run's: they
    would change what the checkpoint means. It fails when the run has no checkpoint or is
    already finished.

    \b
    Example:
      bltdata train --data shards/ --eval-data heldout/ -o runs/debug --preset debug --steps 200
      bltdata train -o runs/debug --resume --steps 400
      bltdata train --show-preset blt-1b
      torchrun --nproc-per-node 8 --no-python bltdata train --data shards/ -o runs/1b --preset blt-1b
    """
    from bltdata.blt import train as blt_train
    from bltdata.blt.data import manifest_summary, train_loader
    from bltdata.blt.distributed import runtime_from_env

    settings = dict(steps=steps, seq_len=seq_len, batch_size=batch_size, lr=lr, warmup_steps=warmup,
                    eval_every=eval_every, eval_batches=eval_batches, checkpoint_every=checkpoint_every,
                    checkpoint_minutes=checkpoint_minutes, sharding=sharding, seed=seed)
    if show_preset:
        click.echo(json.dumps(_resolve(show_preset, settings).to_dict(), indent=2))
        return
    if not run_dir:
        raise click.UsageError("-o/--out is required (the run directory)")
    set_threads(threads)
    if resume:
        data, eval_data, preset, model_config, cfg = _resumed_settings(run_dir, data, eval_data, preset, settings)
    else:
        if not data:
            raise click.UsageError("--data is required (a shard directory, repeatable)")
        run = _resolve(preset or "debug", settings)
        preset, model_config, cfg = run.preset, run.model, run.train
    rt = runtime_from_env(_device(device))
    try:
        summary = manifest_summary(data)
        loader = train_loader(data, cfg.seq_len, cfg.batch_size, rt, seed=cfg.seed, num_workers=workers)
        eval_fn = _eval_fn(eval_data, cfg, rt)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    mean_patch = summary["mean_patch"] or 4.5
    if rt.rank == 0:
        click.echo(blt_train.describe_model(model_config, cfg.seq_len, mean_patch))
    mode = display_mode(progress) if rt.rank == 0 else "off"
    records = _run_with_bar(blt_train.train, model_config, cfg, loader, run_dir, rt, eval_fn, resume,
                            {**summary, "eval_data": eval_data}, mean_patch, preset, mode)
    if rt.rank == 0 and records:
        _print_final(records[-1], run_dir)


def _resolve(name, settings):
    from bltdata.blt.runs import resolve

    try:
        return resolve(name, settings)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def _resumed_settings(run_dir, data, eval_data, preset, settings):
    """(data, eval data, preset, model config, training config) of the run in ``run_dir``, with the
    applicable ``settings`` applied; a usage error naming every option that would change the run's shape."""
    from bltdata import runs
    from bltdata.blt.checkpoint import read_run
    from bltdata.blt.config import config_from_dict
    from bltdata.blt.runs import RESUME_APPLIES, BltTrainConfig

    try:
        run = read_run(run_dir)
    except FileNotFoundError as err:
        raise click.ClickException(f"--resume: {err}") from None
    saved = {"--data": run["data"].get("sources", []), "--eval-data": run["data"].get("eval_data"),
             "--preset": run.get("preset") or _preset_of(run["model"])}
    given = {"--data": list(data) or None, "--eval-data": eval_data, "--preset": preset}
    refused = [(flag, value, saved[flag]) for flag, value in given.items() if value is not None and value != saved[flag]]
    try:
        cfg, changed = runs.resume_with(BltTrainConfig(**run["train"]), settings, RESUME_APPLIES)
    except runs.ResumeConflict as conflict:
        refused += conflict.conflicts
        cfg, changed = None, {}
    if refused:
        raise click.UsageError(runs.ResumeConflict(refused).describe(_flag))
    _check_resume(run_dir, cfg, changed)
    return saved["--data"], saved["--eval-data"], saved["--preset"], config_from_dict(run["model"]), cfg


def _preset_of(model: dict) -> str | None:
    """The preset whose model shape is ``model`` (runs written before run.json recorded the preset)."""
    from bltdata.blt.runs import PRESETS

    return next((name for name, make in PRESETS.items() if make().model.to_dict() == model), None)


def _check_resume(run_dir, cfg, changed) -> None:
    """Say where --resume starts and which options it applies, or fail: no checkpoint, or a finished run."""
    from bltdata.blt.checkpoint import resume_point

    try:
        path, done = resume_point(run_dir)
    except FileNotFoundError as err:
        raise click.ClickException(f"--resume: {err}") from None
    if done >= cfg.steps:
        raise click.ClickException(f"--resume: {run_dir} is already finished (step {done} of {cfg.steps}); "
                                   f"nothing to do (a larger --steps trains longer)")
    if os.environ.get("RANK", "0") == "0":  # torchrun: once, not per rank
        click.echo(f"resuming {run_dir} from step {done} of {cfg.steps} ({path})", err=True)
        for name, (old, new) in changed.items():
            click.echo(f"applied on resume: {_flag(name)} {new} (the run had {old})", err=True)


def _eval_fn(eval_data, cfg, rt):
    if not eval_data:
        return None
    from bltdata.blt.data import eval_batches
    from bltdata.shards import read_manifest

    read_manifest(eval_data)  # fail now, not at the first evaluation
    return lambda: eval_batches(eval_data, cfg.seq_len, cfg.batch_size, rt)


def _run_with_bar(train_fn, model_config, cfg, loader, run_dir, rt, eval_fn, resume, data_info, mean_patch, preset,
                  mode):
    from bltdata.cli.progress import Progress, shown

    bar = Progress(cfg.steps, desc="train", unit="step", mode=mode)
    totals = {"bytes": 0, "patches": 0, "seconds": 1e-9}  # throughput over the steps of this process

    def on_step(record):
        for key in totals:
            totals[key] += record[key]
        bar.update(record["step"], loss=f"{record['loss']:.3f}", bpb=f"{record['bpb']:.3f}",
                   bytes_s=f"{totals['bytes'] / totals['seconds']:,.0f}",
                   patches_s=f"{totals['patches'] / totals['seconds']:,.0f}")
        if "eval" in record:
            bar.write(f"step {record['step']}: held-out {record['eval']['bpb']:.4f} bits/byte "
                      f"({record['eval']['bytes']:,} bytes)")

    from bltdata.interrupt import StopRequest, TrainingInterrupted

    try:
        with shown(bar), StopRequest() as stop:
            return train_fn(model_config, cfg, loader, run_dir, rt, eval_data=eval_fn, resume=resume,
                            on_step=on_step, data_info=data_info, mean_patch=mean_patch, should_stop=stop,
                            preset=preset)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    except TrainingInterrupted as stopped:
        if rt.rank == 0:
            click.echo(f"{stopped}\nresume with: bltdata train -o {run_dir} --resume", err=True)
        sys.exit(stopped.exit_code)


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

    from bltdata import extras
    from bltdata.blt.generate import make_patcher
    from bltdata.patch_config import PatcherConfig

    if run["model"].get("kind") == "byte":
        from bltdata.blt.generate import whole_text_patch

        return whole_text_patch  # the byte-level baseline reads no patches
    extras.require("patching")  # the patch rules are numba kernels
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
