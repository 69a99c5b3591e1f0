"""Building blocks shared by the segmentation methods (prompted ViT, attention-to-mask,
multi-scale deformable attention, masked-attention decoder, Hungarian matcher, ...).

``ms_deform_attn(value, spatial_shapes, sampling_locations, attention_weights)`` is the pure-PyTorch
deformable-attention sampling core with Deformable DETR's tensor layout.
"""

from vocaseg.models.layers.deform_attn import ms_deform_attn

__all__ = ["ms_deform_attn"]
