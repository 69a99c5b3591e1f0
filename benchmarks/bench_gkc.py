"""GKC speed: images/s of GKC against the two-stage baseline (the same CLIP RN50 Mask2Former and
100 proposals, each classified by CLIP's image encoder on its masked 224² crop), side by side in
one run, at 512² and at the 800-short-side protocol (800×1216, the OpenTrans paper's size), with
parameters and FLOPs (torch.utils.flop_counter.FlopCounterMode: 2 FLOPs per multiply-add, matmuls
and convolutions; grid_sample and elementwise ops are not counted). Random weights (no download).

    python benchmarks/bench_gkc.py [--sizes 512x512 800x1216] [--classes 133] [--repeats 2]
        [--device cpu|cuda] [--threads N] [--vit-crops]

Every timing is the median after one warm-up, of the whole ``model(images, text)`` call (text
embeddings precomputed, as the segmenter caches them). ``--vit-crops`` also times CLIP ViT-B/16's
image encoder on the 100 crops, the crop classifier of SimBaseline (the paper's two-stage
reference), and adds it to GKC's time as an estimate of that baseline (labelled as such).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vocaseg.models.registry import create_model


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gflops(fn: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def inference_parameters(model) -> int:
    """Backbone (BatchNorm affine included), head, final projection, e_∅ and the scale."""
    backbone = sum(p.numel() for p in model.backbone.parameters())
    backbone += sum(b.numel() for n, b in model.backbone.named_buffers()
                    if n.endswith(("weight", "bias")))  # fmt: skip
    head = sum(p.numel() for p in model.sem_seg_head.parameters())
    final = sum(p.numel() for p in model.embed_proj[-1].parameters())
    return backbone + head + final + model.non_object_embedding.numel() + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "800x1216"])
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vit-crops", action="store_true", help="also time ViT-B/16 crops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    gkc = create_model("gkc").to(device).eval()  # random CLIP RN50 weights
    two_stage = create_model("gkc", two_stage=True).to(device).eval()
    two_stage.load_state_dict(gkc.state_dict(), strict=False)  # the same proposal network
    for model in (gkc, two_stage):  # inference only (and the FLOP counter's hooks need it)
        model.requires_grad_(False)
    clip_visual = sum(p.numel() for p in two_stage.clip.visual.parameters())
    text = F.normalize(torch.randn(args.classes, 1024, device=device), dim=-1)

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.classes} classes, {gkc.config.num_queries} proposals")  # fmt: skip
    print(f"parameters at inference: GKC {inference_parameters(gkc) / 1e6:.2f}M; two-stage "
          f"{(inference_parameters(gkc) + clip_visual) / 1e6:.2f}M (+ CLIP RN50 image encoder "
          f"{clip_visual / 1e6:.2f}M); text tower not counted")  # fmt: skip
    vit_row = vit_crops(gkc.config.num_queries, args.repeats, device) if args.vit_crops else None
    print("| input | model | GFLOPs | median s / image | images/s | two-stage / GKC time |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        image = torch.randn(1, 3, height, width, device=device)
        results = []
        for name, model in (("GKC", gkc), ("two-stage", two_stage)):
            with torch.no_grad():  # the counter's module hooks reject inference tensors
                flops = gflops(lambda m=model, x=image: m(x, text))
            with torch.inference_mode():
                seconds = median_seconds(lambda m=model, x=image: m(x, text), args.repeats, device)
            results.append((name, flops, seconds))
        ratio = results[1][2] / results[0][2]
        for name, flops, seconds in results:
            shown = f"{ratio:.2f}" if name == "two-stage" else "1.00"
            print(f"| {height}×{width} | {name} | {flops:.1f} | {seconds:.3f} | "
                  f"{1 / seconds:.2f} | {shown} |")  # fmt: skip
        if vit_row is not None:
            flops, seconds = results[0][1] + vit_row[0], results[0][2] + vit_row[1]
            print(f"| {height}×{width} | GKC proposals + ViT-B/16 on the crops (estimate) | "
                  f"{flops:.1f} | {seconds:.3f} | {1 / seconds:.2f} | "
                  f"{seconds / results[0][2]:.2f} |")  # fmt: skip


def vit_crops(count: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """(GFLOPs, seconds) of CLIP ViT-B/16's image encoder on ``count`` 224² crops."""
    from vocaseg import clip as clip_lib

    visual = clip_lib.build("ViT-B/16").visual.to(device).eval().requires_grad_(False)
    crops = torch.randn(count, 3, 224, 224, device=device)
    with torch.no_grad():
        flops = gflops(lambda: visual(crops))
    with torch.inference_mode():
        seconds = median_seconds(lambda: visual(crops), repeats, device)
    return flops, seconds


if __name__ == "__main__":
    main()
