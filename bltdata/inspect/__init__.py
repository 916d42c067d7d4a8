"""Inspection tools for shard directories (docs/design.md §8), the library behind the CLI commands.

- `locate`: global index / doc id → shard, row group, row; `head`.
- `render`: a document drawn with its patches as text (`show`).
- `stats`: distributions over all shards, computed with polars (`stats`).
- `plot`: PNG figures — entropy per byte with θ and boundaries; patch-length histogram.
- `synthetic`: shard directories for tests (flat numpy views of Arrow columns are in `bltdata.arrow`).

The converters that write new shard directories (`repatch`, `blt_arrow`) are in
`bltdata.convert`. Submodules are imported on use; importing this package loads nothing heavy.
"""
