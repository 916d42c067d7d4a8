"""What a run preset is, and how settings given on a command line meet a saved run.

Both trainers (`bltdata.blt.runs`, `bltdata.entropy.runs`) keep their run presets as plain
functions (torchtitan's ``config_registry``): each returns a whole run, model shape and
training settings together, so a default is declared once, in the preset. A command line
only overrides the settings it names (:func:`override`).

Resuming a saved run splits its settings in two. Those that say what the checkpoint *is*
(model shape, data, seed, batch and sequence, optimizer and schedule) must keep their
stored value: asking for another one raises :class:`ResumeConflict`, naming each setting
and the value the run holds. The others (the trainer's ``RESUME_APPLIES``: how long to
train, how often to checkpoint and evaluate, parallelism) may change; :func:`resume_with`
applies them and returns which ones changed, so the caller can say so.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

Config = TypeVar("Config")


class ResumeConflict(ValueError):
    """Settings that would change what a saved run is: ``conflicts`` lists (name, given, stored)."""

    def __init__(self, conflicts: list[tuple[str, Any, Any]]):
        self.conflicts = conflicts
        shown = "; ".join(f"{name} {given!r} (the run has {stored!r})" for name, given, stored in conflicts)
        super().__init__(f"cannot change on resume: {shown}")

    def describe(self, flag_of: Callable[[str], str]) -> str:
        """The message with each setting shown as its command-line option (``flag_of(name)``)."""
        return "--resume keeps the run's shape; these differ from it: " + "; ".join(
            f"{flag_of(name)} {given} (the run has {stored})" for name, given, stored in self.conflicts)


def override(config: Config, overrides: dict[str, Any]) -> Config:
    """``config`` with the given settings replaced (None means: not given); validated again."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no setting {', '.join(unknown)}")
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def resume_with(stored: Config, overrides: dict[str, Any], applies: frozenset[str]) -> tuple[Config, dict]:
    """(the config to resume with, {name: (stored, new)} of the settings that changed).

    A given setting equal to the stored one is accepted whatever its kind, so the command
    line that started the run also resumes it. ResumeConflict for the others.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    changed = {k: (getattr(stored, k), v) for k, v in given.items() if getattr(stored, k) != v}
    conflicts = [(k, new, old) for k, (old, new) in changed.items() if k not in applies]
    if conflicts:
        raise ResumeConflict(conflicts)
    return override(stored, {k: new for k, (_, new) in changed.items()}), changed
