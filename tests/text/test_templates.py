"""Prompt-template sets: sizes, order and content (docs/methods/maskclip.md §5,
docs/methods/tagclip.md §2.2), and lookup errors."""

from __future__ import annotations

import pytest

from vocaseg.errors import ConfigError
from vocaseg.text.templates import TEMPLATE_SETS, get_templates


def test_set_sizes_and_every_template_has_one_slot():
    sizes = {name: len(templates) for name, templates in TEMPLATE_SETS.items()}
    assert sizes == {
        "single": 1, "voc_single": 1, "coco15": 15, "imagenet80": 80, "maskclip85": 85,
        "identity": 1, "subset7": 7,
    }  # fmt: skip
    for templates in TEMPLATE_SETS.values():
        assert len(set(templates)) == len(templates)
        assert all(t.count("{}") == 1 for t in templates)


def test_contents_follow_the_specs():
    assert get_templates("single") == ("a photo of a {}.",)
    assert get_templates("voc_single") == ("a photo of a {}",)  # TagCLIP VOC: no period
    assert get_templates("identity") == ("{}",)  # GKC: the name alone
    subset = get_templates("subset7")  # GroupViT's subset: all from the ImageNet list
    assert subset[0] == "itap of a {}." and set(subset) <= set(get_templates("imagenet80"))
    imagenet = get_templates("imagenet80")
    assert imagenet[:3] == ("a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.")
    assert imagenet[39] == "a photo of a {}." and imagenet[-1] == "a tattoo of the {}."
    maskclip = get_templates("maskclip85")
    assert maskclip[:80] == imagenet
    assert maskclip[80:] == (
        "there is a {} in the scene.",
        "there is the {} in the scene.",
        "this is a {} in the scene.",
        "this is the {} in the scene.",
        "this is one {} in the scene.",
    )
    coco = get_templates("coco15")
    assert coco[0] == "a photo of a {}." and coco[-1] == "This is one {} in the scene."


def test_custom_lists_are_checked():
    assert get_templates(["a {} here", "the {}"]) == ("a {} here", "the {}")
    with pytest.raises(ConfigError, match="exactly one"):
        get_templates(["no slot"])
    with pytest.raises(ConfigError, match="empty"):
        get_templates([])


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown template set 'imagenet81'.*coco15.*maskclip85"):
        get_templates("imagenet81")
