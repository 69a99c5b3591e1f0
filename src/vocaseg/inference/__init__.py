"""Inference: sliding-window and whole-image prediction, the user-facing Segmenter, video."""
