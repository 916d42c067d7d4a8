"""The entropy model: the small byte LM whose per-byte entropies decide patch boundaries.

- ``model``      — the causal byte transformer (sliding-window attention) and its presets;
- ``checkpoint`` — ``config.json`` + ``model.safetensors`` directories, the bundled
  ``default`` model, and import of the reference BLT checkpoint;
- ``engine``     — exact, batched scoring of many documents (``EntropyEngine``);
- ``calibrate``  — choosing θ for a target mean patch length;
- ``train``      — training on a corpus (``bltdata entropy train``).

Importing this package does not import torch; the modules do.
"""
