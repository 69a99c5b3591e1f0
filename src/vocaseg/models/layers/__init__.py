"""Building blocks shared by the segmentation methods (prompted ViT, attention-to-mask, ...)."""
