"""`bltdata entropy ...`: train, inspect, calibrate and import entropy models."""
import shlex
import sys

import click

from bltdata.cli.progress import progress_option
from bltdata.device import DEVICES, PRECISIONS, resolve_device, set_threads  # torch is imported only when they run
from bltdata.entropy.names import PRESET_NAMES
from bltdata.patch_config import ENTROPY_MODES

_COLOURS = ("cyan", "yellow", "green", "magenta", "blue", "red")


def _device(name: str) -> str:
    try:
        return resolve_device(name)
    except RuntimeError as err:
        raise click.UsageError(str(err)) from None


def _load_model(model_dir: str, device: str):
    from bltdata.entropy.checkpoint import load_checkpoint

    try:
        return load_checkpoint(model_dir, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None


def _load_documents(inputs, max_bytes=None):
    from bltdata.entropy.train import load_documents

    try:
        return load_documents(inputs, max_bytes=max_bytes)
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err)) from None


device_option = click.option("--device", type=click.Choice(DEVICES), default="auto",
                             show_default=True, help="Where the model runs.")
precision_option = click.option("--precision", type=click.Choice(("auto",) + PRECISIONS), default="auto",
                                show_default=True, help="Model arithmetic; must match the one the shards are made "
                                "with (auto: bf16 on CUDA and CPUs with AVX512-BF16/AMX, else fp32).")
threads_option = click.option("--threads", type=click.IntRange(min=1),
                              help="CPU threads for torch [default: torch's choice]. Use 1 on a busy machine.")


@click.group("entropy")
def entropy():
    """Entropy models: train, score text, calibrate θ, import and export (reference, Hugging Face).

    MODEL_DIR is a checkpoint directory (config.json + model.safetensors) or `default`,
    the model bundled with bltdata.

    \b
    Example:
      bltdata entropy score default --text "def hello(): return 42"
    """


PRESET_HELP = " [default: the preset's; see --show-preset]"
FLAGS = {"warmup_steps": "--warmup", "inputs": "INPUT..."}  # when a setting's option is not --setting-name


def _flag(setting: str) -> str:
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


@entropy.command("train")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Model directory to write (required).")
@click.option("--preset", type=click.Choice(PRESET_NAMES),
              help="The run: model shape and every training default [default: small].")
@click.option("--show-preset", type=click.Choice(PRESET_NAMES), metavar="NAME",
              help="Print the run NAME resolves to (with the options given here applied) as JSON, and exit.")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps." + PRESET_HELP)
@click.option("--seq-len", type=click.IntRange(min=2), help="Tokens per training sequence [default: the model's "
                                                            "context].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Sequences per step." + PRESET_HELP)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate." + PRESET_HELP)
@click.option("--warmup", type=click.IntRange(min=0), help="Warmup steps [default: min(200, steps/10)].")
@click.option("--eval-every", type=click.IntRange(min=1),
              help="Steps between held-out evaluations (and resumable checkpoints)." + PRESET_HELP)
@click.option("--eval-bytes", type=click.IntRange(min=1), help="Held-out bytes scored per evaluation." + PRESET_HELP)
@click.option("--heldout-percent", type=click.FloatRange(min=0, max=100, min_open=True, max_open=True),
              help="Share of the corpus bytes held out (at least 16 documents)." + PRESET_HELP)
@click.option("--checkpoint-minutes", type=click.FloatRange(min=0),
              help="Also write a resumable checkpoint after this many wall minutes since the last one (0: off)."
                   + PRESET_HELP)
@click.option("--target-patch-size", type=click.FloatRange(min=1.0),
              help="Mean patch length (bytes) θ is calibrated for at the end, on held-out documents." + PRESET_HELP)
@click.option("--max-bytes", type=click.IntRange(min=1), help="Read at most this many corpus bytes [default: all].")
@click.option("--seed", type=int, help="Seed of the weights and the sampled windows." + PRESET_HELP)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT; see RESUME below for the "
                                             "options it applies and those it refuses.")
@progress_option
@device_option
@threads_option
def train(inputs, output, preset, show_preset, steps, seq_len, batch_size, lr, warmup, eval_every, eval_bytes,
          heldout_percent, checkpoint_minutes, target_patch_size, max_bytes, seed, resume, progress, device, threads):
    """Train an entropy model on INPUT... (files, directories, globs, or `default`).

    `default` is the embedded corpus (this Python's standard library sources and docs). A
    --preset is a whole run (model shape and the defaults of every option); an option
    given here replaces the preset's value, OUTPUT/training.json records the resolved run,
    and `--show-preset NAME` prints it. --heldout-percent of the corpus bytes (at least 16
    documents, chosen by content hash) is held out; held-out bits per byte are measured
    every --eval-every steps. OUTPUT's config.json + model.safetensors are the BEST model
    by held-out BPB; the last one, for --resume, is in OUTPUT/checkpoints (written every
    --eval-every steps, every --checkpoint-minutes, and on Ctrl-C / SIGTERM, which then exit
    with 130 / 143). At the end θ is calibrated on held-out documents for
    --target-patch-size and recorded in config.json, where `patch`, `entropy score` and
    `generate` find it.

    RESUME: `--resume` continues from the last checkpoint with the run's saved settings
    (INPUT... may then be left out). It APPLIES --steps (a larger one trains longer; the
    cosine schedule is stretched to the new end), --eval-every, --checkpoint-minutes,
    --target-patch-size, --device and --threads, and prints the saved settings it changed. It REFUSES
    (exit 2, naming the option and the run's value) other INPUT..., --preset, --seq-len,
    --batch-size, --lr, --warmup, --eval-bytes, --heldout-percent, --max-bytes or --seed.

    The first example is the README's, on the corpus `bltdata demo` writes: it took 71.9 s on
    a 2-core CPU, its held-out BPB still falling at step 300.

    \b
    Example:
      bltdata entropy train bltdata-demo/corpus/ -o models/mine --preset tiny --steps 300 --eval-every 100
      bltdata entropy train -o models/mine --resume --steps 600
      bltdata entropy train default -o models/std --preset tiny --steps 300   # the whole embedded corpus
      bltdata entropy train --show-preset paper-100m
    """
    settings = dict(inputs=list(inputs) or None, preset=preset, steps=steps, seq_len=seq_len, batch_size=batch_size,
                    lr=lr, warmup_steps=warmup, eval_every=eval_every, eval_bytes=eval_bytes,
                    heldout_percent=heldout_percent, checkpoint_minutes=checkpoint_minutes,
                    target_patch_size=target_patch_size, max_bytes=max_bytes, seed=seed)
    if show_preset:
        import json

        from bltdata.entropy.runs import resolve

        click.echo(json.dumps(resolve(show_preset, {**settings, "preset": None}).to_dict(), indent=2))
        return
    if not output:
        raise click.UsageError("-o/--output is required (the model directory)")
    set_threads(threads)
    if resume:
        config = _resumed_config(output, settings)
    elif not inputs:
        raise click.UsageError("INPUT... is required (files, directories, globs or `default`)")
    else:
        config = _new_config(output, settings)
    _train_with_bar(config, _device(device), resume, _train_command(config, threads), progress)


def _new_config(output, settings):
    import dataclasses

    from bltdata.entropy.runs import resolve

    try:
        run = resolve(settings["preset"] or "small", {**settings, "preset": None})
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    return dataclasses.replace(run.train, out_dir=output)


def _resumed_config(output, settings):
    """The run's saved settings with the applicable ``settings`` applied (printed); a usage error
    naming every option that would change the run's shape."""
    import json
    from pathlib import Path

    from bltdata import runs
    from bltdata.entropy.runs import RESUME_APPLIES, EntropyTrainConfig
    from bltdata.entropy.train import TRAINING_LOG_FILE, resume_point

    try:
        path = resume_point(output)
        saved = json.loads((Path(output) / TRAINING_LOG_FILE).read_text())  # written with each checkpoint
    except FileNotFoundError as err:
        raise click.ClickException(f"--resume: {err}") from None
    stored = EntropyTrainConfig(**{**saved["config"], "out_dir": output}).resolved()
    try:
        config, changed = runs.resume_with(stored, settings, RESUME_APPLIES)
    except runs.ResumeConflict as conflict:
        raise click.UsageError(conflict.describe(_flag)) from None
    click.echo(f"resuming {output} from step {saved['step']} ({path})", err=True)
    for name, (old, new) in changed.items():
        click.echo(f"applied on resume: {_flag(name)} {new} (the run had {old})", err=True)
    return config


def _train_with_bar(config, device, resume, command, progress) -> None:
    from bltdata.cli.progress import Progress, display_mode, shown

    from bltdata.entropy.train import train_entropy_model
    from bltdata.interrupt import StopRequest, TrainingInterrupted

    bar = Progress(config.steps, desc=f"train {config.preset}", unit="step", mode=display_mode(progress))

    def on_step(step, metrics):
        postfix = {"loss": f"{metrics['loss']:.3f}", "kB_s": f"{metrics['bytes_per_s'] / 1e3:.1f}"}
        if "bpb" in metrics:
            postfix["bpb"] = f"{metrics['bpb']:.3f}"
        bar.update(step, **postfix)

    try:
        with shown(bar), StopRequest() as stop:
            result = train_entropy_model(config, device=device, resume=resume, on_step=on_step,
                                         command=command, should_stop=stop)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    except TrainingInterrupted as stopped:
        bar.close()
        click.echo(f"{stopped}\nresume with: {command} --resume", err=True)
        sys.exit(stopped.exit_code)
    finally:
        bar.close()
    _print_trained(config.out_dir, result)


def _print_trained(output, result) -> None:
    click.echo(f"{output}: step {result['step']}, held-out {result['heldout_bpb']:.4f} bits/byte (last); "
               f"best {result['best_heldout_bpb']:.4f} at step {result['best_step']}, saved as the model")
    calibrated = result.get("threshold")
    if calibrated:
        click.echo(f"θ = {calibrated['threshold']:.6g}: mean patch {calibrated['mean_patch']:.3f} bytes on "
                   f"{calibrated['bytes']:,} held-out bytes (recorded in {output}/config.json)")
    else:
        click.echo("θ not calibrated (see the warning above): patch will use the reference θ 1.3354")


def _train_command(config, threads) -> str:
    """The command line that reproduces this run (every setting of the resolved run spelled out)."""
    parts = ["bltdata", "entropy", "train", *config.inputs, "-o", config.out_dir]
    for name in ("preset", "steps", "seq_len", "batch_size", "lr", "warmup_steps", "eval_every", "eval_bytes",
                 "heldout_percent", "checkpoint_minutes", "target_patch_size", "max_bytes", "seed"):
        value = getattr(config, name)
        if value is not None:
            parts += [_flag(name), str(value)]
    if threads is not None:
        parts += ["--threads", str(threads)]
    return shlex.join(parts)


@entropy.command("score")
@click.argument("model_dir", metavar="MODEL_DIR")
@click.option("--text", help="Text to score (UTF-8).")
@click.option("--file", "file_", type=click.Path(exists=True, dir_okay=False), help="File to score (its raw bytes).")
@click.option("--threshold", type=float,
              help="θ in nats [default: the model's recommended θ (entropy mode), else the reference's 1.3354].")
@click.option("--target-patch-size", type=float, help="Choose θ on this text so the mean patch has this many bytes.")
@click.option("--mode", type=click.Choice(ENTROPY_MODES), default="entropy", show_default=True)
@click.option("--max-patch-length", type=click.IntRange(min=1), help="Split longer patches.")
@click.option("--table/--no-table", default=True, show_default=True, help="Print one line per byte.")
@click.option("--color/--no-color", default=None, help="Colour the patches [default: on a terminal].")
@device_option
@precision_option
@threads_option
def score(model_dir, text, file_, threshold, target_patch_size, mode, max_patch_length, table, color, device,
          precision, threads):
    """Print per-byte entropies of a text and the patches they give.

    Each table line is: byte offset, the byte, its entropy H (nats; the model's
    uncertainty before seeing it) and `|` where a patch starts. Then the text is printed
    with alternating colours per patch.

    \b
    Example:
      bltdata entropy score default --text "import numpy as np" --threshold 2.0
      bltdata entropy score models/mine --file README.md --no-table --target-patch-size 4
    """
    if (text is None) == (file_ is None):
        raise click.UsageError("give exactly one of --text and --file")
    if threshold is not None and target_patch_size is not None:
        raise click.UsageError("--threshold and --target-patch-size exclude each other")
    set_threads(threads)
    data = text.encode("utf-8") if text is not None else open(file_, "rb").read()
    if not data:
        raise click.UsageError("nothing to score: the text is empty")
    from bltdata.entropy.engine import EntropyEngine
    from bltdata.patching import DEFAULT_THRESHOLD, PatcherConfig, calibrate_threshold, patch_lengths

    from bltdata.entropy.calibrate import choose_threshold

    entropies = EntropyEngine(_load_model(model_dir, _device(device)), device=_device(device),
                              precision=precision).score([data])[0]
    config = PatcherConfig(mode=mode, threshold=DEFAULT_THRESHOLD, max_patch_length=max_patch_length)
    try:
        choice = choose_threshold(model_dir, mode, threshold=threshold, target_patch_size=target_patch_size,
                                  calibrate=lambda: calibrate_threshold(entropies[:-1], [0, len(data)],
                                                                        target_patch_size, config))
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    config = PatcherConfig(mode=mode, threshold=choice.threshold, max_patch_length=max_patch_length)
    lengths = patch_lengths(config, data, entropies)
    if table:
        _print_table(data, entropies, lengths)
    _print_patches(data, lengths, color)
    click.echo(f"{len(data)} bytes, {len(lengths)} patches (mean {len(data) / len(lengths):.2f} bytes), "
               f"mode {mode}, {choice.describe()}; H after the last byte: {entropies[-1]:.3f}")


def _print_table(data: bytes, entropies, lengths) -> None:
    import numpy as np

    starts = set(np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist())
    click.echo(f"{'pos':>7}  {'byte':<6} {'H':>7}")
    for k, byte in enumerate(data):
        shown = repr(bytes([byte]))[2:-1]
        click.echo(f"{k:>7}  {shown:<6} {entropies[k]:7.3f} {'|' if k in starts else ''}")


def _print_patches(data: bytes, lengths, color) -> None:
    """The text, one colour per patch; a character cut by a boundary shows in the patch it ends in."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    pieces, start = [], 0
    for i, length in enumerate(lengths):
        piece = decoder.decode(data[start:start + int(length)], final=i == len(lengths) - 1)
        pieces.append(click.style(piece, fg=_COLOURS[i % len(_COLOURS)], reverse=i % 2 == 1))
        start += int(length)
    click.echo("".join(pieces), color=color)


@entropy.command("calibrate")
@click.argument("model_dir", metavar="MODEL_DIR")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--target-patch-size", type=click.FloatRange(min=1.0), required=True, help="Mean patch length wanted (bytes).")
@click.option("--mode", type=click.Choice(ENTROPY_MODES), default="entropy", show_default=True)
@click.option("--max-patch-length", type=click.IntRange(min=1), help="Split longer patches (as the pipeline will).")
@click.option("--sample-bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Calibrate on the first this-many bytes of the inputs.")
@click.option("--write", is_flag=True,
              help="Record θ in MODEL_DIR/config.json as its recommended θ (entropy mode; not for `default`).")
@device_option
@precision_option
@threads_option
def calibrate(model_dir, inputs, target_patch_size, mode, max_patch_length, sample_bytes, write, device, precision,
              threads):
    """Print the θ giving a mean patch length of --target-patch-size on INPUT....

    θ is printed alone on stdout (for scripts); a summary goes to stderr. With --write, θ
    and the target are stored in MODEL_DIR/config.json, where `patch`, `entropy score` and
    `generate` pick it up when no --threshold / --target-patch-size is given. Calibrate
    on data like the corpus you will patch, not the model's own training data (its
    entropies there are too low).

    \b
    Example:
      bltdata entropy calibrate default corpus/ --target-patch-size 4.5
      bltdata entropy calibrate models/mine heldout.jsonl --target-patch-size 4.5 --write
      bltdata patch corpus/ -o shards/ --threshold "$(bltdata entropy calibrate default corpus/ --target-patch-size 6)"
    """
    from bltdata.entropy.calibrate import calibrate_from_documents
    from bltdata.entropy.engine import EntropyEngine
    from bltdata.patch_config import PatcherConfig

    if write and mode != "entropy":
        raise click.UsageError("--write records an entropy-mode θ (the recommended θ); drop --mode monotonic")
    set_threads(threads)
    docs = _load_documents(inputs, max_bytes=sample_bytes)
    engine = EntropyEngine(_load_model(model_dir, _device(device)), device=_device(device), precision=precision)
    try:
        theta, summary = calibrate_from_documents(engine, docs, target_patch_size,
                                                  PatcherConfig(mode=mode, max_patch_length=max_patch_length),
                                                  max_bytes=sample_bytes)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{theta!r}")
    click.echo(f"mean patch {summary['mean_patch']:.3f} bytes over {summary['bytes']} bytes "
               f"of {summary['documents']} documents ({summary['patches']} patches); θ from --target-patch-size",
               err=True)
    if write:
        _write_threshold(model_dir, theta, target_patch_size, summary, inputs)


def _write_threshold(model_dir, theta, target_patch_size, summary, inputs) -> None:
    from bltdata.entropy.checkpoint import record_threshold

    note = (f"entropy-mode θ giving a mean patch of {summary['mean_patch']:.3f} bytes on {summary['bytes']} bytes "
            f"of {shlex.join(inputs)}: bltdata entropy calibrate --target-patch-size {target_patch_size:g}")
    try:
        record_threshold(model_dir, theta, target_patch_size, note)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"recorded θ = {theta:.6g} (for {target_patch_size:g}-byte patches) in {model_dir}/config.json",
               err=True)


@entropy.command("import-reference")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False), metavar="SRC_DIR")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--dtype", type=click.Choice(["keep", "float32", "bfloat16"]), default="keep", show_default=True,
              help="Storage type of the converted weights.")
def import_reference_cmd(src_dir, output, dtype):
    """Convert the released reference entropy model (params.json + consolidated.pth).

    The weights are read with torch.load(weights_only=True); every tensor is mapped to our
    layout with its shape checked. The result is a normal MODEL_DIR.

    \b
    Example:
      bltdata entropy import-reference hf-weights/entropy_model -o models/reference
      bltdata patch corpus/ -o shards/ --model models/reference
    """
    import torch

    from bltdata.entropy.checkpoint import checkpoint_metadata, import_reference

    target = {"keep": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    try:
        out = import_reference(src_dir, output, dtype=target)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    meta = checkpoint_metadata(out)
    click.echo(f"{out}: {meta['name']} (sha256 {meta['sha256'][:16]}…)")


_DTYPES = ("keep", "float32", "bfloat16")


def _dtype(name: str):
    import torch

    return {"keep": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[name]


@entropy.command("import-hf")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False), metavar="SRC_DIR")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--dtype", type=click.Choice(_DTYPES), default="keep", show_default=True,
              help="Storage type of the converted weights.")
def import_hf_cmd(src_dir, output, dtype):
    """Convert the entropy model of a Hugging Face BLT checkpoint (transformers' BltPatcher).

    SRC_DIR holds config.json + model.safetensors (or its sharded index) of a
    BltForCausalLM (e.g. facebook/blt-1b: its patcher_config and model.patcher.* tensors;
    only those are read) or of a standalone BltPatcher. Every tensor is mapped to our
    layout with its shape checked. The result is a normal MODEL_DIR.

    \b
    Example:
      bltdata entropy import-hf hf/blt-1b -o models/blt-1b-entropy
      bltdata patch corpus/ -o shards/ --model models/blt-1b-entropy --threshold 1.335442066192627
    """
    from bltdata.entropy.checkpoint import checkpoint_metadata
    from bltdata.entropy.hf import import_hf

    try:
        out = import_hf(src_dir, output, dtype=_dtype(dtype))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    meta = checkpoint_metadata(out)
    click.echo(f"{out}: {meta['name']} (sha256 {meta['sha256'][:16]}…)")


@entropy.command("export")
@click.argument("model_dir", metavar="MODEL_DIR")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Directory to write.")
@click.option("--format", "format_", type=click.Choice(["hf"]), default="hf", show_default=True,
              help="hf: a transformers BltPatcher (config.json + model.safetensors).")
@click.option("--dtype", type=click.Choice(_DTYPES), default="keep", show_default=True,
              help="Storage type of the exported weights.")
def export_cmd(model_dir, output, format_, dtype):
    """Export an entropy model for Hugging Face transformers.

    The output loads with transformers' BltPatcher.from_pretrained(OUTPUT); its config and
    tensors are exactly what a BLT export embeds as patcher_config and model.patcher.*.

    \b
    Example:
      bltdata entropy export models/mine -o hf/mine-patcher --format hf
      python -c "from transformers import BltPatcher; BltPatcher.from_pretrained('hf/mine-patcher')"
    """
    from bltdata.entropy.hf import export_hf

    try:
        out = export_hf(model_dir, output, dtype=_dtype(dtype))
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{out}: BltPatcher config.json + model.safetensors")


COMMANDS = [entropy]
