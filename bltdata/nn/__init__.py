"""Transformer parts shared by the entropy model (:mod:`bltdata.entropy`) and the BLT (:mod:`bltdata.blt`).

Each part exists once; where the two models were trained with different conventions the
difference is a parameter, so both checkpoints load unchanged:

- :mod:`~bltdata.nn.layers`: ``RMSNorm`` (float32 arithmetic or the input's dtype) and
  ``SwiGLU`` (projection names ``gate_up``/``down`` or ``w_gate_up``/``w_down``);
- :mod:`~bltdata.nn.rope`: interleaved rotary tables (angles in float64 or float32) and their
  application;
- :mod:`~bltdata.nn.attention`: sliding-window masks and the block-local SDPA kernels
  (cost ∝ T · window instead of T²);
- :mod:`~bltdata.nn.flops`: the matrix-multiply FLOPs of these blocks.

This package imports neither ``bltdata.entropy`` nor ``bltdata.blt``.
"""
