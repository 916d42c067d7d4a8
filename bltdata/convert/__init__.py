"""Converters: code that writes a new shard directory or run directory from another one.

- `repatch`: new boundaries from stored entropies, written as a new shard directory.
- `blt_arrow`: export to / import from the reference BLT's Arrow IPC layout.
- `blt_checkpoint`: released BLT checkpoints (HF or reference layout, their entropy model
  included) to and from our run directories.

They sit above both model packages and the shard format, so `blt_checkpoint` may use the
entropy model's checkpoint conversions without `bltdata.blt` importing `bltdata.entropy`.
Submodules are imported on use; importing this package loads nothing heavy.
"""
