"""The Byte Latent Transformer: model, training, evaluation in bits per byte, generation.

Modules (import what you need; importing this package loads nothing):
`config` (BLTConfig, ByteTransformerConfig, presets), `model` (BLT, ByteTransformer),
`hash_embeddings`, `layers`, `attention` and `masks` (who attends to what), `loss` (input /
target alignment, BPB), `train` (TrainConfig, train), `evaluate`, `checkpoint` (run
directories), `data` (shard loader glue), `distributed`, `generate`, `flops`, `synthetic`
(in-memory batches for tests and experiments).
"""
