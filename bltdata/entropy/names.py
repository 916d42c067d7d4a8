"""Names of the entropy-model presets, importable without torch (the CLI lists them in `--help`).

The presets themselves are functions in `bltdata.entropy.model` (which imports torch);
`tests/test_light_imports.py` checks that the two agree.
"""

PRESET_NAMES = ("tiny", "small", "paper-100m")
