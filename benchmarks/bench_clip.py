"""vocaseg's ViT image encoder vs transformers' ``CLIPVisionModelWithProjection`` on the same random
ViT-B/16 weights (converted HF -> OpenAI layout), fp32 CPU, ``torch.inference_mode``.

Timings are interleaved in one process (the order alternates each round); the median of each is reported with
the ratio theirs / ours (> 1 means vocaseg is faster). Run: ``python benchmarks/bench_clip.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from vocaseg.clip.convert import hf_to_openai
from vocaseg.clip.model import VisionTransformer


def build_pair() -> tuple[VisionTransformer, torch.nn.Module]:
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        image_size=224,
        patch_size=16,
        hidden_act="quick_gelu",
        projection_dim=512,
    )
    hf = transformers.CLIPVisionModelWithProjection(config).eval()
    state = hf_to_openai(hf.state_dict())
    ours = VisionTransformer(224, 16, 768, 12, 12, 512, "quick_gelu").eval()
    ours.load_state_dict({k[len("visual.") :]: v for k, v in state.items()})
    return ours, hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--repeats", type=int, nargs="+", default=[5, 3], help="per size")
    args = parser.parse_args()

    ours, hf = build_pair()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__} "
        f"(attn {hf.config._attn_implementation}), threads {torch.get_num_threads()}, "
        f"batch {args.batch}, fp32"
    )
    print("| input | vocaseg ms | transformers ms | ratio (HF / ours) | max abs diff |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for size, repeats in zip(args.sizes, args.repeats):
            x = torch.randn(args.batch, 3, size, size)
            interp = size != 224

            def run_ours(x=x):
                return ours(x)

            def run_hf(x=x, interp=interp):
                return hf(pixel_values=x, interpolate_pos_encoding=interp).image_embeds

            diff = (run_ours() - run_hf()).abs().max().item()  # also the warm-up
            times: dict[str, list[float]] = {"ours": [], "hf": []}
            pair = [("ours", run_ours), ("hf", run_hf)]
            for i in range(repeats):
                for name, fn in pair if i % 2 == 0 else pair[::-1]:  # alternate who goes first
                    start = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - start) * 1e3)
            a, b = statistics.median(times["ours"]), statistics.median(times["hf"])
            print(
                f"| {args.batch}x3x{size}x{size} | {a:.0f} | {b:.0f} | {b / a:.2f} | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
