"""TagCLIP / ZegCLIP speed: inference windows/s at 512×512 against MaskCLIP on the same CLIP
ViT-B/16 backbone, the cost of the TagCLIP head over its prompted backbone, and one training step
(forward + backward + AdamW) at batch 4 with its peak memory. Random weights (no download).

    python benchmarks/bench_tagclip.py [--size 512] [--classes 20] [--repeats 3] [--batch 4]
        [--train-steps 2] [--device cpu|cuda]

On a CPU, use few repeats and training steps; every timing is the median after one warm-up.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vocaseg import clip as clip_lib
from vocaseg.models.registry import create_model
from vocaseg.text.vocab import Vocabulary


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


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute the frozen blocks in backward (run once with and once without: peak "
        "memory is per process)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    tag = create_model(
        "tagclip", clip=clip_lib.build("ViT-B/16"), grad_checkpointing=args.grad_checkpointing
    )
    tag = tag.to(device).eval()
    zeg = create_model("zegclip", clip=clip_lib.build("ViT-B/16")).to(device).eval()
    mask = create_model("maskclip", clip=clip_lib.build("ViT-B/16")).to(device).eval()
    image = torch.randn(1, 3, args.size, args.size, device=device)
    text = F.normalize(torch.randn(args.classes, 512, device=device), dim=-1)
    with_tau = tag.head.append_trusty(text)

    rows = []
    with torch.inference_mode():
        backbone = median_seconds(
            lambda: tag.vpt.encode(tag.clip.visual, image), args.repeats, device
        )
        rows.append(("TagCLIP prompted backbone only (VPT ViT-B/16)", backbone))
        g, patches = tag.vpt.encode(tag.clip.visual, image)
        rows.append(("TagCLIP head only (descriptor, learner, 3 ATM blocks)", median_seconds(lambda: tag.head(g, patches, with_tau), args.repeats, device)))  # fmt: skip
        rows.append(("TagCLIP forward (backbone + head)", median_seconds(lambda: tag(image, with_tau), args.repeats, device)))  # fmt: skip
        rows.append(("ZegCLIP forward", median_seconds(lambda: zeg(image, text), args.repeats, device)))  # fmt: skip
        rows.append(("MaskCLIP forward (same backbone, training-free)", median_seconds(lambda: mask(image, text), args.repeats, device)))  # fmt: skip
    reference = rows[-1][1]
    print(f"device {device}, {args.size}x{args.size} window, {args.classes} classes, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")  # fmt: skip
    print("| model | median s / window | windows/s | × MaskCLIP time | × backbone time |")
    print("|---|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {1 / seconds:.2f} | {seconds / reference:.2f} | {seconds / backbone:.3f} |")  # fmt: skip

    # Training step: batch of images + labels through forward_train / loss / AdamW.
    vocab = Vocabulary.from_names([f"class {i}" for i in range(args.classes)], seen=range(15))
    tag.encode_vocabulary = lambda v: F.normalize(torch.randn(len(v), 512, device=device), dim=-1)
    tag.prepare_training(vocab, "inductive")
    tag.train()
    params = [p for p in tag.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
    label = torch.randint(0, 20, (args.batch, args.size, args.size), device=device)
    batch = {
        "image": torch.randn(args.batch, 3, args.size, args.size, device=device),
        "label": torch.where(label < 15, label, 255),
        "label_full": label,
    }

    def step() -> None:
        losses = tag.loss(batch, tag.forward_train(batch))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = median_seconds(step, args.train_steps, device)
    print(f"\nTagCLIP training step, batch {args.batch} at {args.size}x{args.size}, "
          f"activation checkpointing {'on' if args.grad_checkpointing else 'off'}: "
          f"{seconds:.2f} s/step (median of {args.train_steps} after 1 warm-up), "
          f"peak memory {peak_memory_mib(device):.0f} MiB "
          f"({'CUDA allocated' if device.type == 'cuda' else 'process max RSS'}); "
          f"trainable parameters {sum(p.numel() for p in params):,}")  # fmt: skip


if __name__ == "__main__":
    main()
