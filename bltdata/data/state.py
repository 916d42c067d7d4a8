"""Loader state: its formats, how saved states are found and checked, and elastic merging.

Three kinds of state, all plain dicts of ints, strings and lists (JSON- and torch.save-safe):

- **slot** — one (rank, worker) slot: for each source the plan, the *position* — the global
  position `epoch * T + t` of the first token not yet delivered in a batch, where T is the
  source's tokens per epoch (its bytes plus two per document) and t the offset in that epoch's
  stream — the sequences delivered, and the mixing counter (bytes delivered). `PatchedDataset.state_dict()` returns this; `StatefulDataLoader` stores one
  per worker.
- **rank** — the slots of one rank plus which worker yields next (`ResumableLoader`).
- **global** — only plans, no per-slot progress: what an elastic merge produces. Every slot of
  the new job starts at the beginning of its share.

A saved state can be given back as one of these, as a `StatefulDataLoader` state dict, or as a
list of any of them (for example one per old rank); `collect_states` finds the states inside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from bltdata.data.order import Plan, merge_plans

STATE_FORMAT = "bltdata.loader/1"
ORDER_KEYS = ("seed", "shuffle", "shuffle_window")


class StateError(ValueError):
    """A saved loader state cannot be used with this dataset."""


def is_loader_state(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == STATE_FORMAT


def collect_states(obj: Any) -> list[dict]:
    """Every loader state (slot, rank or global) inside obj: dicts, lists, StatefulDataLoader states."""
    if is_loader_state(obj):
        if obj["kind"] == "rank":
            return list(obj["slots"])
        return [obj]
    found: list[dict] = []
    if isinstance(obj, dict):
        for value in obj.values():
            found.extend(collect_states(value))
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            found.extend(collect_states(value))
    return found


def next_worker(obj: Any) -> tuple[int, int] | None:
    """(num_workers, next worker) recorded by ResumableLoader in a single rank state, if any."""
    if is_loader_state(obj) and obj["kind"] == "rank":
        return int(obj["num_workers"]), int(obj["next_worker"])
    return None


def check_compatible(states: Sequence[dict], sources: Sequence, order: dict) -> None:
    """Refuse states made for other manifests (fingerprint), another order, or another source list."""
    for state in states:
        saved = state["sources"]
        if len(saved) != len(sources):
            raise StateError(f"loader state has {len(saved)} sources, this dataset has {len(sources)}")
        for src, entry in zip(sources, saved):
            if entry["fingerprint"] != src.fingerprint:
                raise StateError(
                    f"{src.path}: manifest fingerprint {src.fingerprint[:16]}... differs from "
                    f"{entry['fingerprint'][:16]}... in the saved loader state (saved for {entry['manifest']}): "
                    f"the shards changed since the state was saved; refusing to resume")
        for key in ORDER_KEYS:
            if state["order"][key] != order[key]:
                raise StateError(f"loader state was saved with {key}={state['order'][key]!r}, this dataset uses "
                                 f"{order[key]!r}; the global order would differ")


@dataclass
class Resume:
    """What a dataset resumes from: plans, and per-slot states when resuming the same layout."""

    plans: list[Plan]
    num_slots: int | None = None          # slot layout the slot states belong to
    slots: dict[int, dict] | None = None  # slot index -> slot state
    shift: tuple[int, int] | None = None  # (num_workers, first logical worker) for ResumableLoader
    align: int | None = None              # the old job's slot alignment (DataConfig.align)


def resume_from(obj: Any, sources: Sequence, order: dict, max_epochs: int | None) -> Resume:
    """Turn any saved form into a Resume, merging the old job's slots if it covers them all."""
    states = collect_states(obj)
    if not states:
        raise StateError("no bltdata loader state found in the object given to load_state_dict")
    check_compatible(states, sources, order)
    plans_of = {repr([s["plan"] for s in st["sources"]]) for st in states}
    if len(plans_of) != 1:
        raise StateError("the loader states come from different jobs (their plans differ)")
    plans = [Plan.from_dict(s["plan"]) for s in states[0]["sources"]]
    if states[0]["kind"] == "global":
        return Resume(plans)
    num_slots = {int(s["num_slots"]) for s in states}
    if len(num_slots) != 1:
        raise StateError(f"the loader states come from jobs with different slot counts {sorted(num_slots)}")
    aligns = {s.get("align") for s in states}
    if len(aligns) != 1:
        raise StateError(f"the loader states come from jobs with different slot splits (align {sorted(map(str, aligns))})")
    slots = {int(s["slot"]): s for s in states}
    return Resume(plans, num_slots.pop(), slots, next_worker(obj), aligns.pop())


def merged(resume: Resume, sources: Sequence, max_epochs: int | None) -> Resume:
    """A global Resume continuing where every slot of the old job stopped (elastic resume)."""
    assert resume.slots is not None and resume.num_slots is not None
    missing = sorted(set(range(resume.num_slots)) - set(resume.slots))
    if missing:
        raise StateError(f"cannot merge: the states of slots {missing} of the old job's {resume.num_slots} are missing "
                         f"(pass the states of every rank)")
    plans = []
    for m, (src, plan) in enumerate(zip(sources, resume.plans)):
        positions = [resume.slots[s]["sources"][m]["position"] for s in range(resume.num_slots)]
        plans.append(merge_plans(plan, positions, src.epoch, src.tokens_per_epoch, max_epochs, resume.align))
    return Resume(plans)


def global_state(plans: Sequence[Plan], sources: Sequence, order: dict) -> dict:
    return {"format": STATE_FORMAT, "kind": "global", "order": dict(order),
            "sources": [{"manifest": src.path, "fingerprint": src.fingerprint, "plan": plan.to_dict()}
                        for src, plan in zip(sources, plans)]}
