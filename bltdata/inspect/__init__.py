"""Inspection tools for shard directories (docs/design.md §8), the library behind the CLI commands.

- `locate`: global index / doc id → shard, row group, row; `head`.
- `render`: a document drawn with its patches as text (`show`).
- `stats`: distributions over all shards, computed with polars (`stats`).
- `plot`: PNG figures — entropy per byte with θ and boundaries; patch-length histogram.
- `repatch`: new boundaries from stored entropies, written as a new shard directory.
- `blt_arrow`: export to / import from the reference BLT's Arrow IPC layout.
- `synthetic`: shard directories for tests (flat numpy views of Arrow columns are in `bltdata.arrow`).

Submodules are imported on use; importing this package loads nothing heavy.
"""
