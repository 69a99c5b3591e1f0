"""Named prompt-template sets: a class name fills the ``{}`` of each template.

Sources: docs/methods/maskclip.md §5 (``single``, ``imagenet80``, ``maskclip85``) and
docs/methods/tagclip.md §2.2 (``voc_single``, ``coco15``). ``imagenet80`` is OpenAI's ImageNet
prompt-engineering list in its standard order; ``maskclip85`` appends MaskCLIP's five scene
templates to it. ``identity`` feeds the class name alone (GKC encodes names verbatim; GroupViT's
``identity`` template set). ``subset7`` is GroupViT's seven-template subset of the ImageNet list
(NVlabs/GroupViT ``datasets/imagenet_template.py``, ``sub_imagenet_template``), an option for
ZeroSeg.

Public: ``TEMPLATE_SETS`` (name -> tuple of templates), ``get_templates(name_or_list)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from vocaseg.errors import ConfigError

IMAGENET80 = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

MASKCLIP_SCENE = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

COCO15 = (
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "a {} in the scene.",
    "a photo of a {} in the scene.",
    "There is a {} in the scene.",
    "There is the {} in the scene.",
    "This is a {} in the scene.",
    "This is the {} in the scene.",
    "This is one {} in the scene.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "single": ("a photo of a {}.",),
    "voc_single": ("a photo of a {}",),
    "coco15": COCO15,
    "imagenet80": IMAGENET80,
    "maskclip85": IMAGENET80 + MASKCLIP_SCENE,
    "identity": ("{}",),
    "subset7": (
        "itap of a {}.",
        "a bad photo of a {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
}


def get_templates(name_or_list: str | Sequence[str]) -> tuple[str, ...]:
    """Templates of a named set, or a custom list checked to hold exactly one ``{}`` each."""
    if isinstance(name_or_list, str):
        if name_or_list not in TEMPLATE_SETS:
            raise ConfigError(
                f"unknown template set {name_or_list!r}; choose one of "
                f"{', '.join(TEMPLATE_SETS)} or pass a list of strings with one '{{}}' each"
            )
        return TEMPLATE_SETS[name_or_list]
    templates = tuple(name_or_list)
    if not templates:
        raise ConfigError("the template list is empty; pass e.g. ['a photo of a {}.']")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ConfigError(
                f"template {template!r} must be a string with exactly one '{{}}' for the class name"
            )
    return templates
