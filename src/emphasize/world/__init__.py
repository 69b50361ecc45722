"""The embedded world: procedural scenes with exact ground truth (pure numpy / PIL / scipy, no torch).

Scenes of 1-3 flat shapes (six shapes, six colours, two sizes, grid positions), their captions from a small
grammar (with a parser), instruction tasks with exact targets (segment, keypoint, edit, enhance), an analytic
detector that reads any image back into objects, and metrics built on it.

    >>> from emphasize.world import sample_t2i, detect, score_t2i
    >>> item = sample_t2i(seed=0, size=64)
    >>> score_t2i(item.spec, item.image)["object_recall"]
    1.0

Names are loaded lazily (PEP 562) so that `import emphasize.world.cli` does not pull in numpy or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> submodule
_EXPORTS: dict[str, str] = {
    # palette
    "BACKGROUND": "palette",
    "COLOURS": "palette",
    "COLOUR_NAMES": "palette",
    "colour_rgb": "palette",
    "nearest_colour": "palette",
    # shapes
    "SHAPES": "shapes",
    "KEYPOINTS": "shapes",
    "signed_distance": "shapes",
    # scenes
    "RELATIONS": "scene",
    "SIZES": "scene",
    "Relation": "scene",
    "Scene": "scene",
    "SceneConfig": "scene",
    "SceneObject": "scene",
    "relation_holds": "scene",
    "sample_scene": "scene",
    "scene_from_dict": "scene",
    "scene_to_dict": "scene",
    # rendering
    "blend_mask": "rendering",
    "draw_ring": "rendering",
    "object_masks": "rendering",
    "render": "rendering",
    # captions
    "CaptionSpec": "captions",
    "ObjectSpec": "captions",
    "caption": "captions",
    "format_caption": "captions",
    "parse_caption": "captions",
    "phrase_spans": "captions",
    "scene_spec": "captions",
    "spec_from_dict": "captions",
    "spec_to_dict": "captions",
    # referring expressions
    "Reference": "refer",
    "reference_text": "refer",
    "references": "refer",
    "resolve": "refer",
    # items
    "KINDS": "tasks",
    "TASKS": "tasks",
    "Edit": "tasks",
    "T2IItem": "tasks",
    "TaskConfig": "tasks",
    "TaskItem": "tasks",
    "item_seed": "tasks",
    "iter_items": "tasks",
    "keypoint_position": "tasks",
    "sample_t2i": "tasks",
    "sample_task": "tasks",
    # detector
    "Detection": "detector",
    "DetectorConfig": "detector",
    "detect": "detector",
    # metrics
    "PSNR_CAP": "metrics",
    "MetricConfig": "metrics",
    "aggregate": "metrics",
    "edit_success": "metrics",
    "find_ring": "metrics",
    "mask_iou": "metrics",
    "overlay_mask": "metrics",
    "psnr": "metrics",
    "score_t2i": "metrics",
    "ssim": "metrics",
    "t2i_metrics": "metrics",
    "task_metrics": "metrics",
    # records
    "t2i_from_record": "records",
    "t2i_record": "records",
    "task_from_record": "records",
    "task_record": "records",
    # gallery
    "make_gallery": "gallery",
    # the referring-expression suite
    "DISCRIMINATORS": "referring",
    "REFER_KINDS": "referring",
    "ReferringItem": "referring",
    "landing": "referring",
    "sample_referring": "referring",
}

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "COLOUR_NAMES",
    "DISCRIMINATORS",
    "KEYPOINTS",
    "KINDS",
    "PSNR_CAP",
    "REFER_KINDS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "TASKS",
    "CaptionSpec",
    "Detection",
    "DetectorConfig",
    "Edit",
    "MetricConfig",
    "ObjectSpec",
    "Reference",
    "ReferringItem",
    "Relation",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "T2IItem",
    "TaskConfig",
    "TaskItem",
    "aggregate",
    "blend_mask",
    "caption",
    "colour_rgb",
    "detect",
    "draw_ring",
    "edit_success",
    "find_ring",
    "format_caption",
    "item_seed",
    "iter_items",
    "keypoint_position",
    "landing",
    "make_gallery",
    "mask_iou",
    "nearest_colour",
    "object_masks",
    "overlay_mask",
    "parse_caption",
    "phrase_spans",
    "psnr",
    "reference_text",
    "references",
    "relation_holds",
    "render",
    "resolve",
    "sample_referring",
    "sample_scene",
    "sample_t2i",
    "sample_task",
    "scene_from_dict",
    "scene_spec",
    "scene_to_dict",
    "score_t2i",
    "signed_distance",
    "spec_from_dict",
    "spec_to_dict",
    "ssim",
    "t2i_from_record",
    "t2i_metrics",
    "t2i_record",
    "task_from_record",
    "task_metrics",
    "task_record",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see the real imports
    from .captions import (  # noqa: F401
        CaptionSpec,
        ObjectSpec,
        caption,
        format_caption,
        parse_caption,
        phrase_spans,
        scene_spec,
        spec_from_dict,
        spec_to_dict,
    )
    from .detector import Detection, DetectorConfig, detect  # noqa: F401
    from .gallery import make_gallery  # noqa: F401
    from .metrics import (  # noqa: F401
        PSNR_CAP,
        MetricConfig,
        aggregate,
        edit_success,
        find_ring,
        mask_iou,
        overlay_mask,
        psnr,
        score_t2i,
        ssim,
        t2i_metrics,
        task_metrics,
    )
    from .palette import BACKGROUND, COLOUR_NAMES, COLOURS, colour_rgb, nearest_colour  # noqa: F401
    from .records import t2i_from_record, t2i_record, task_from_record, task_record  # noqa: F401
    from .refer import Reference, reference_text, references, resolve  # noqa: F401
    from .referring import DISCRIMINATORS, REFER_KINDS, ReferringItem, landing, sample_referring  # noqa: F401
    from .rendering import blend_mask, draw_ring, object_masks, render  # noqa: F401
    from .scene import (  # noqa: F401
        RELATIONS,
        SIZES,
        Relation,
        Scene,
        SceneConfig,
        SceneObject,
        relation_holds,
        sample_scene,
        scene_from_dict,
        scene_to_dict,
    )
    from .shapes import KEYPOINTS, SHAPES, signed_distance  # noqa: F401
    from .tasks import (  # noqa: F401
        KINDS,
        TASKS,
        Edit,
        T2IItem,
        TaskConfig,
        TaskItem,
        item_seed,
        iter_items,
        keypoint_position,
        sample_t2i,
        sample_task,
    )
