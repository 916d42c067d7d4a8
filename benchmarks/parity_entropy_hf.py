"""Our entropy model against transformers' ``BltPatcher`` on the same random weights (CPU, fp32).

Both directions — a random ``BltPatcher`` imported with :func:`bltdata.entropy.hf.from_hf_patcher`,
and a random model of ours exported with :func:`bltdata.entropy.hf.to_hf_patcher` — on the
released architecture (``BltPatcherConfig()`` defaults: 14 layers, dim 768, window 512) and
on a tiny one with window 16 over long inputs. Prints max |Δlogit|, max |ΔH| (nats) and
whether the patch boundaries at θ = 1.3354 agree (the output head scaled so that entropies
fall on both sides of θ).

    python benchmarks/parity_entropy_hf.py                 # both sizes
    python benchmarks/parity_entropy_hf.py --sizes tiny    # seconds
"""
import argparse

import torch

from bltdata.entropy.engine import entropies_from_logits
from bltdata.entropy.hf import from_hf_patcher, to_hf_patcher
from bltdata.entropy.model import EntropyModel
from bltdata.patching import DEFAULT_THRESHOLD, PatcherConfig, patch_lengths

SIZES = {"released": ({}, 1200, 1.0), "tiny": ({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                               "intermediate_size": 96, "sliding_window": 16}, 4096, 5.0)}


def compare(hf, model, tokens: torch.Tensor, head_scale: float) -> dict:
    with torch.inference_mode():
        hf.lm_head.weight.mul_(head_scale)
        model.output.weight.mul_(head_scale)
        hf_h, hf_lengths, hf_logits = hf(tokens, patch_size=4, threshold=DEFAULT_THRESHOLD)
        logits = model(tokens)
    h = entropies_from_logits(logits)[0].numpy()
    data = (tokens[0, 1:] - 4).to(torch.uint8).numpy()
    ours = patch_lengths(PatcherConfig(mode="entropy", threshold=DEFAULT_THRESHOLD), data, h).tolist()
    theirs = [n for n in hf_lengths[0].tolist()[1:] if n > 0]  # BOS patch and zero-length padding dropped
    return {"dlogit": (logits - hf_logits).abs().max().item(), "dH": abs(h - hf_h[0].numpy()).max(),
            "patches": len(ours), "same_patches": ours == theirs,
            "min |H-θ|": abs(h[:-1] - DEFAULT_THRESHOLD).min()}


def run(name: str, seed: int = 0) -> None:
    from transformers import BltPatcherConfig
    from transformers.models.blt.modeling_blt import BltPatcher

    overrides, length, head_scale = SIZES[name]
    torch.manual_seed(seed)
    tokens = torch.cat([torch.ones(1, 1, dtype=torch.long), torch.randint(4, 260, (1, length))], dim=1)
    hf = BltPatcher(BltPatcherConfig(**overrides)).eval()
    config, state = from_hf_patcher(hf.config.to_dict(), hf.state_dict())
    model = EntropyModel(config).eval()
    model.load_state_dict(state)
    print(f"{name} HF→ours (window {config.window}, {length + 1} tokens):", compare(hf, model, tokens, head_scale))
    model = EntropyModel(config).eval()
    model.reset_parameters(seed=seed + 1)
    patcher_config, hf_state = to_hf_patcher(config, model.state_dict())
    hf = BltPatcher(BltPatcherConfig(**patcher_config)).eval()
    hf.load_state_dict(hf_state, strict=True)
    print(f"{name} ours→HF:", compare(hf, model, tokens, head_scale))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "released"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.sizes:
        run(name)


if __name__ == "__main__":
    main()
