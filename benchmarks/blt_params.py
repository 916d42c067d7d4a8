"""Parameters per component: our BLT presets beside transformers' BltForCausalLM of the same release.

blt-1b is compared with ``BltConfig()`` (transformers' defaults are the released 1B, see
README for the one field where they are not); blt-7b with a ``BltConfig`` given the 7B shape.
Both models are built on the meta device (no memory). Run: ``python benchmarks/blt_params.py``.
"""
import json
import sys

import torch

from bltdata.blt.config import preset
from bltdata.convert.blt_checkpoint import config_to_hf
from bltdata.blt.model import BLT, parameter_breakdown

HF_COMPONENTS = (  # (component, transformers key prefixes), same components as BLT_COMPONENTS
    ("byte embedding", ("model.local_encoder.embed_tokens.",)),
    ("hash embeddings", ("model.encoder_hash_tok_embedding.",)),
    ("local encoder", ("model.local_encoder.layers.",)),
    ("patch pooling", ("model.local_encoder.patch_embedding_projection.", "model.local_encoder.cross_attn_layers.",
                       "model.global_transformer.token_embedding_projection.")),
    ("global transformer", ("model.global_transformer.layers.",)),
    ("local decoder", ("model.local_decoder.",)),
    ("output head", ("lm_head.",)),
    ("entropy model (patcher)", ("model.patcher.",)),
)


def hf_breakdown(config) -> dict[str, int]:
    import transformers

    with torch.device("meta"):
        model = transformers.BltForCausalLM(config)
    counts = {name: 0 for name, _ in HF_COMPONENTS}
    for key, param in model.named_parameters():
        name = next(n for n, prefixes in HF_COMPONENTS if key.startswith(prefixes))
        counts[name] += param.numel()
    return counts


def main() -> None:
    import transformers

    rows = {}
    for name in ("blt-1b", "blt-7b"):
        config = preset(name)
        with torch.device("meta"):
            ours = parameter_breakdown(BLT(config))
        hf_config = transformers.BltConfig() if name == "blt-1b" else \
            transformers.BltConfig(**{k: v for k, v in config_to_hf(config).items() if k not in ("architectures",)})
        rows[name] = {"ours": ours, "transformers": hf_breakdown(hf_config),
                      "transformers_encoder_ffn": hf_config.encoder_config.intermediate_size}
    json.dump(rows, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
