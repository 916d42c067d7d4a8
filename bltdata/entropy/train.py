"""Training an entropy model on a byte corpus.

Documents come from the corpus readers (any input :func:`bltdata.readers.list_inputs`
accepts, or the word ``default`` for the embedded corpus). The held-out split is
``heldout_percent`` of the corpus *bytes* and at least ``heldout_min_docs`` documents, taken
in the order of the documents' content hashes (SHA-256), so the same documents are held out
whatever the input order (identical documents always land on the same side). Training documents are laid end to end as ``[BOS] + bytes + [EOS]`` in one token
stream; each step samples ``batch_size`` windows of ``seq_len + 1`` tokens from it (a seeded
generator, so runs are reproducible and resumable) and trains with attention masked to
each document (positions restart at every document), matching how documents are scored.

AdamW (no decay on norms and embeddings), linear warmup then cosine decay to
``min_lr_ratio · lr`` (both from `bltdata.optim`), gradient clipping, bf16 autocast on CUDA. Every ``eval_every``
steps the held-out bits per byte are measured exactly as the engine scores documents
(Σ NLL over bytes and EOS / ln 2 / positions). The output directory holds::

    config.json + model.safetensors   the BEST model so far by held-out BPB (what users load)
    training.json                     settings, history, best step, θ calibration
    checkpoints/latest                name of the newest resumable checkpoint
    checkpoints/step_00000200/        the LAST model + train_state.pt (optimizer, step, RNG;
                                      loaded back with ``weights_only=True``)

The resumable checkpoint is written every ``eval_every`` steps, every
``checkpoint_minutes`` of wall time, at the end, and when ``should_stop()`` turns true
(the CLI sets it on SIGINT/SIGTERM; the loop then raises ``TrainingInterrupted``). At the
end θ is calibrated on held-out documents with the best model so that the mean patch is
``target_patch_size`` bytes, and stored in its ``config.json`` (``recommended_threshold``).
A resume takes the settings saved in ``training.json``; only those of ``RESUME_APPLIES``
(more steps, cadences, θ target) may differ, and ``training.json`` lists each change
under ``resumes``; any other differing setting raises ``bltdata.runs.ResumeConflict``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bltdata.entropy.checkpoint import record_threshold, save_checkpoint
from bltdata.interrupt import CheckpointClock, TrainingInterrupted
from bltdata.fs import write_json_atomic
from bltdata.entropy.engine import EntropyEngine
from bltdata.entropy.model import EntropyModel, preset as preset_config
from bltdata.entropy.runs import RESUME_APPLIES, EntropyTrainConfig
from bltdata.ids import BOS_ID, EOS_ID, OFFSET
from bltdata.optim import adamw, set_lr
from bltdata.runs import resume_with

logger = logging.getLogger(__name__)

TRAIN_STATE_FILE = "train_state.pt"
TRAINING_LOG_FILE = "training.json"
CHECKPOINTS = "checkpoints"
CALIBRATION_BYTES = 1 << 20  # held-out bytes θ is calibrated on at the end


# --- corpus ------------------------------------------------------------------------------

def load_documents(inputs: Sequence[str], *, max_bytes: int | None = None) -> list[bytes]:
    """Documents (bytes) of the inputs, in order; ``"default"`` is the embedded corpus.

    Rejected records are logged and counted, never silently dropped.
    """
    from bltdata.corpus import default_corpus_files
    from bltdata.readers import Reject, list_inputs, read_input

    docs, total, rejected = [], 0, 0
    for spec in inputs:
        if spec == "default":
            stream: Iterable = (data for _, data in default_corpus_files(max_bytes))
        else:
            stream = (rec for f in list_inputs([spec]) for rec in read_input(f))
        for record in stream:
            if max_bytes is not None and total >= max_bytes:
                break
            if isinstance(record, Reject):
                rejected += 1
                logger.warning("rejected %s:%d: %s", record.source, record.position, record.reason)
                continue
            data = record if isinstance(record, bytes) else record.data
            docs.append(data)
            total += len(data)
    logger.info("read %d documents (%d bytes), %d rejected", len(docs), total, rejected)
    return docs


def _content_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split_heldout(docs: Sequence[bytes], percent: float, min_docs: int = 16) -> tuple[list[bytes], list[bytes]]:
    """(train, held-out): ``percent`` % of the bytes and >= ``min_docs`` documents held out.

    Documents are taken in content-hash order (independent of the input order); identical
    documents stay together. At least one document is left on each side.
    """
    if len(docs) < 2:
        raise ValueError(f"need at least 2 non-empty documents to split train/held-out, got {len(docs)}")
    hashes = [_content_hash(d) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: hashes[i])
    want_bytes, want_docs = percent / 100 * sum(len(d) for d in docs), min(min_docs, len(docs) - 1)
    taken, held_bytes = 0, 0
    while taken < len(docs) - 1 and (held_bytes < want_bytes or taken < want_docs
                                     or (taken > 0 and hashes[order[taken]] == hashes[order[taken - 1]])):
        held_bytes += len(docs[order[taken]])
        taken += 1
    held = set(order[:taken])
    heldout = [docs[i] for i in order[:taken]]
    train = [d for i, d in enumerate(docs) if i not in held]
    if not train or not heldout:
        raise ValueError(f"cannot split {len(docs)} documents into train and held-out (all identical?)")
    return train, heldout


class PackedStream:
    """Training documents as one token stream; samples windows with their document ids."""

    def __init__(self, docs: Sequence[bytes]):
        lengths = np.array([len(d) + 2 for d in docs], dtype=np.int64)
        self.doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.tokens = np.empty(int(lengths.sum()), dtype=np.int16)
        for start, data in zip(self.doc_starts, docs):
            self.tokens[start] = BOS_ID
            self.tokens[start + 1:start + 1 + len(data)] = np.frombuffer(data, dtype=np.uint8).astype(np.int16) + OFFSET
            self.tokens[start + 1 + len(data)] = EOS_ID

    def __len__(self) -> int:
        return len(self.tokens)

    def sample(self, batch_size: int, seq_len: int, generator: torch.Generator):
        """Inputs (B, T), targets (B, T) (-100 where a target would cross into the next document), doc ids (B, T)."""
        span = min(seq_len + 1, len(self.tokens))
        starts = torch.randint(0, len(self.tokens) - span + 1, (batch_size,), generator=generator).numpy()
        index = starts[:, None] + np.arange(span)[None, :]
        window = torch.from_numpy(self.tokens[index].astype(np.int64))
        doc_ids = torch.from_numpy(np.searchsorted(self.doc_starts, index, side="right"))
        inputs, targets = window[:, :-1], window[:, 1:].clone()
        targets[doc_ids[:, 1:] != doc_ids[:, :-1]] = -100  # EOS → next BOS is not a prediction
        return inputs, targets, doc_ids[:, :-1]


# --- optimisation --------------------------------------------------------------------------

def evaluate_bpb(model: EntropyModel, heldout: Sequence[bytes], *, device="cpu", max_bytes: int = 131072) -> float:
    """Held-out bits per byte: Σ NLL (bytes and EOS) / ln 2 / positions, documents scored alone.

    Documents are taken in order up to ``max_bytes``; the last one may be cut, and then its
    EOS (which would follow the cut) is not counted.
    """
    sample, cut, remaining = [], False, max_bytes
    for data in heldout:
        if remaining <= 0:
            break
        cut = len(data) > remaining
        sample.append(data[:remaining])
        remaining -= len(sample[-1])
    was_training = model.training
    try:
        losses = EntropyEngine(model, device=device, precision="fp32").nll(sample)  # BPB in fp32
    finally:
        model.train(was_training)
    if cut:
        losses[-1] = losses[-1][:-1]
    total = sum(float(x.astype(np.float64).sum()) for x in losses)
    count = sum(len(x) for x in losses)
    return total / math.log(2) / count


# --- the loop ------------------------------------------------------------------------------

@dataclass
class TrainRun:
    """Everything a step needs; rebuilt from ``train_state.pt`` on resume."""

    config: EntropyTrainConfig
    model: EntropyModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0      # wall and process CPU time of the runs before this one (resume)
    cpu_seconds: float = 0.0
    resumes: list = field(default_factory=list)  # {"step", "changed"} of each resume that changed settings


def train_entropy_model(config: EntropyTrainConfig, *, device: str = "cpu", resume: bool = False,
                        on_step: Callable[[int, dict], None] | None = None, command: str | None = None,
                        should_stop: Callable[[], bool] | None = None) -> dict:
    """Train (or resume) and checkpoint into ``config.out_dir``; returns the final metrics.

    ``on_step(step, metrics)`` is called after every step (metrics: loss, lr, bytes_per_s,
    and bpb after an evaluation) — the CLI draws its progress bar from it. Returns step,
    the last and the best held-out BPB (best_step) and the calibrated θ (``threshold``).
    """
    if not config.inputs or not config.out_dir:
        raise ValueError(f"a training run needs inputs and an out_dir (got {config.inputs!r}, {config.out_dir!r})")
    run = _resume_run(config, device) if resume else _new_run(config.resolved(), device)
    config = run.config  # on resume: the saved settings with the applicable ones replaced
    docs = load_documents(config.inputs, max_bytes=config.max_bytes)
    train_docs, heldout = split_heldout(docs, config.heldout_percent, config.heldout_min_docs)
    stream = PackedStream(train_docs)
    seq_len = config.seq_len or run.model.config.max_seqlen
    corpus = {"documents": len(docs), "train_tokens": len(stream), "heldout_documents": len(heldout),
              "heldout_bytes": sum(len(d) for d in heldout)}
    logger.info("training %s (%d parameters) on %d documents (%d tokens), %d held out (%d bytes)", config.preset,
                run.model.num_params(), len(train_docs), len(stream), len(heldout), corpus["heldout_bytes"])
    metrics: dict = {}
    tokens_seen, started, cpu_started = 0, time.perf_counter(), time.process_time()
    clock = CheckpointClock(config.eval_every, config.checkpoint_minutes)

    def timing() -> dict:  # this run's time plus the time of the runs it resumes
        return {"wall_seconds": run.seconds + time.perf_counter() - started,
                "cpu_seconds": run.cpu_seconds + time.process_time() - cpu_started}

    while run.step < config.steps:
        loss = _train_step(run, stream, seq_len, device)
        run.step += 1
        tokens_seen += config.batch_size * seq_len
        metrics = {"loss": loss, "lr": config.schedule().lr_at(run.step - 1),
                   "bytes_per_s": tokens_seen / (time.perf_counter() - started)}
        if run.step % config.eval_every == 0 or run.step == config.steps:
            metrics["bpb"] = evaluate_bpb(run.model, heldout, device=device, max_bytes=config.eval_bytes)
            _keep_if_best(run, loss, metrics["bpb"])
        stop = bool(should_stop and should_stop())
        if clock.due(run.step) or stop or run.step == config.steps:
            path = _save_run(run, command, corpus, timing())
            clock.saved()
        if on_step:
            on_step(run.step, metrics)
        if stop and run.step < config.steps:
            raise TrainingInterrupted(run.step, path, getattr(should_stop, "signum", None) or 2)
    threshold = _calibrate_best(config, heldout, device)
    _write_log(run, command, corpus, timing(), threshold)
    best = _best(run.history)
    return {"step": run.step, "heldout_bpb": run.history[-1]["heldout_bpb"] if run.history else None,
            "best_step": best["step"], "best_heldout_bpb": best["heldout_bpb"], "threshold": threshold, **metrics}


def _best(history: list) -> dict:
    """The evaluation with the lowest held-out BPB (the earliest of equals)."""
    return min(history, key=lambda h: h["heldout_bpb"]) if history else {"step": None, "heldout_bpb": None}


def _keep_if_best(run: TrainRun, loss: float, bpb: float) -> None:
    """Record the evaluation; the model becomes OUT/config.json + model.safetensors if it is the best."""
    improved = not run.history or bpb < _best(run.history)["heldout_bpb"]
    run.history.append({"step": run.step, "loss": loss, "heldout_bpb": bpb})
    if improved:
        save_checkpoint(run.model, run.config.out_dir, preset=run.config.preset,
                        name=Path(run.config.out_dir).resolve().name)
        logger.info("step %d: best held-out %.4f bits/byte so far, saved to %s", run.step, bpb, run.config.out_dir)


def _calibrate_best(config: EntropyTrainConfig, heldout: Sequence[bytes], device: str) -> dict | None:
    """θ of the best model for ``target_patch_size`` on held-out documents, recorded in its config.json."""
    from bltdata.entropy.calibrate import calibrate_from_documents
    from bltdata.entropy.checkpoint import load_checkpoint

    engine = EntropyEngine(load_checkpoint(config.out_dir, device=device), device=device)
    try:
        theta, summary = calibrate_from_documents(engine, heldout, config.target_patch_size,
                                                  max_bytes=CALIBRATION_BYTES)
    except ValueError as err:
        logger.warning("%s: θ not calibrated (%s); patch will use the reference θ", config.out_dir, err)
        return None
    note = (f"entropy-mode θ giving a mean patch of {summary['mean_patch']:.3f} bytes (target "
            f"{config.target_patch_size}) on {summary['bytes']} held-out bytes of {summary['documents']} documents, "
            f"calibrated by `bltdata entropy train`")
    record_threshold(config.out_dir, theta, config.target_patch_size, note)
    return summary


def _train_step(run: TrainRun, stream: PackedStream, seq_len: int, device: str) -> float:
    inputs, targets, doc_ids = (t.to(device) for t in stream.sample(run.config.batch_size, seq_len, run.generator))
    set_lr(run.optimizer, run.config.schedule().lr_at(run.step))
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        logits = run.model(inputs, doc_ids=doc_ids)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _new_run(config: EntropyTrainConfig, device: str) -> TrainRun:
    torch.manual_seed(config.seed)
    model = EntropyModel(preset_config(config.preset))
    model.reset_parameters(seed=config.seed)
    model.to(device).train()
    generator = torch.Generator().manual_seed(config.seed)
    return TrainRun(config, model, adamw(model, lr=config.lr, weight_decay=config.weight_decay), generator)


def resume_point(out_dir: str | os.PathLike) -> Path:
    """The newest resumable checkpoint of ``out_dir`` (or ``out_dir`` itself, the layout before
    ``checkpoints/``); FileNotFoundError saying why when there is none."""
    out = Path(out_dir)
    pointer = out / CHECKPOINTS / "latest"
    if pointer.is_file():
        path = pointer.parent / pointer.read_text().strip()
        if not (path / TRAIN_STATE_FILE).is_file():
            raise FileNotFoundError(f"{pointer}: names {path.name}, which is missing or incomplete")
        return path
    if (out / TRAIN_STATE_FILE).is_file():
        return out
    raise FileNotFoundError(f"{out}: nothing to resume from (no {CHECKPOINTS}/latest: no training run has "
                            f"checkpointed here yet)")


def _resume_run(config: EntropyTrainConfig, device: str) -> TrainRun:
    from bltdata.entropy.checkpoint import load_checkpoint, read_config

    path = resume_point(config.out_dir)
    saved_preset = read_config(path).get("preset")
    if saved_preset != config.preset:
        raise ValueError(f"{path}: checkpoint is preset {saved_preset!r}, asked to train {config.preset!r}")
    state = torch.load(path / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    config, resumes = _resumed_config(config, int(state["step"]))
    if int(state["step"]) >= config.steps:
        raise ValueError(f"{config.out_dir}: already trained {int(state['step'])} steps (--steps {config.steps}); "
                         f"nothing to do: pass a larger --steps to train longer")
    model = load_checkpoint(path, device=device).train()
    optimizer = adamw(model, lr=config.lr, weight_decay=config.weight_decay)
    optimizer.load_state_dict(state["optimizer"])
    generator = torch.Generator()
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    history = json.loads(state["history"])
    logger.info("resuming %s at step %d", path, int(state["step"]))
    return TrainRun(config, model, optimizer, generator, int(state["step"]), history,
                    float(state.get("seconds", 0.0)), float(state.get("cpu_seconds", 0.0)), resumes)


def _resumed_config(config: EntropyTrainConfig, step: int) -> tuple[EntropyTrainConfig, list]:
    """The saved settings (``training.json``) with those of ``RESUME_APPLIES`` that ``config`` changes;
    ResumeConflict (a ValueError) when it changes another. Also the run's list of resumes, this one added."""
    log_path = Path(config.out_dir) / TRAINING_LOG_FILE
    try:
        saved = json.loads(log_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{log_path}: missing; the run's settings are unknown, cannot resume") from None
    stored = EntropyTrainConfig(**{**saved["config"], "out_dir": config.out_dir}).resolved()  # moved: same run
    merged, changed = resume_with(stored, dataclasses.asdict(config), RESUME_APPLIES)
    resumes = list(saved.get("resumes", []))
    if changed:
        resumes.append({"step": step, "changed": {k: list(v) for k, v in changed.items()}})
        logger.info("%s: resumed at step %d with %s", config.out_dir, step,
                    ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))
    return merged, resumes


def _save_run(run: TrainRun, command: str | None, corpus: dict, timing: dict) -> Path:
    """The resumable checkpoint (last model + train state) under checkpoints/, then ``latest``, then the log."""
    out = Path(run.config.out_dir)
    final = out / CHECKPOINTS / f"step_{run.step:08d}"
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(run.model, staging, preset=run.config.preset, name=out.resolve().name)
    state = {"optimizer": run.optimizer.state_dict(), "step": run.step, "generator": run.generator.get_state(),
             "torch_rng": torch.get_rng_state(), "history": json.dumps(run.history),
             "seconds": timing["wall_seconds"], "cpu_seconds": timing["cpu_seconds"]}
    torch.save(state, staging / TRAIN_STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    (final.parent / "latest.tmp").write_text(final.name + "\n")
    os.replace(final.parent / "latest.tmp", final.parent / "latest")
    for old in final.parent.glob("step_*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    _write_log(run, command, corpus, timing)
    return final


def _write_log(run: TrainRun, command: str | None, corpus: dict, timing: dict, threshold: dict | None = None) -> None:
    best = _best(run.history)
    log = {"command": command, "config": dataclasses.asdict(run.config), "step": run.step,
           "heldout_bpb": run.history[-1]["heldout_bpb"] if run.history else None,
           "best": {"step": best["step"], "heldout_bpb": best["heldout_bpb"]}, "corpus": corpus,
           "history": run.history, **timing, "threads": torch.get_num_threads(), "torch": torch.__version__}
    if run.resumes:
        log["resumes"] = run.resumes
    if threshold is not None:
        log["threshold"] = threshold
    write_json_atomic(str(Path(run.config.out_dir) / TRAINING_LOG_FILE), log)
