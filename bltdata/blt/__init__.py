"""The Byte Latent Transformer: model, training, evaluation in bits per byte, generation.

Modules (import what you need; importing this package loads nothing):
`config` (BLTConfig, ByteTransformerConfig, model shapes), `runs` (BltTrainConfig and the
run presets: model + training settings), `model` (BLT, ByteTransformer), `hash_embeddings`,
`layers`, `attention` and `masks` (who attends to what), `loss` (input / target alignment,
BPB), `train` (the loop), `evaluate`, `checkpoint` (run directories), `data` (shard loader
glue), `distributed`, `generate`, `flops`, `synthetic` (in-memory batches for tests and
experiments).
"""
