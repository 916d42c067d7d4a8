"""The entropy model: the small byte LM whose per-byte entropies decide patch boundaries.

- ``config``     — the model's config, its presets and FLOPs (torch-free);
- ``model``      — the causal byte transformer (its parts from :mod:`bltdata.nn`);
- ``layout``     — how a forward pass attends (causal, dense mask, block-local);
- ``checkpoint`` — ``config.json`` + ``model.safetensors`` directories, the bundled
  ``default`` model, and import of the reference BLT checkpoint;
- ``engine``     — exact, batched scoring of many documents (``EntropyEngine``);
- ``calibrate``  — choosing θ for a target mean patch length;
- ``train``      — training on a corpus (``bltdata entropy train``).

Importing this package does not import torch; the modules do.
"""
