"""Data: records, decoding, crop views, collate and the Lightning data module.

Public helpers used by other parts: :func:`load_image`, :func:`build_eval_views`,
:func:`corner_crop_boxes`, :func:`collate`.
"""

from cropformer.data.collate import collate
from cropformer.data.decode import load_image
from cropformer.data.errors import SampleError
from cropformer.data.views import build_eval_views, corner_crop_boxes, resize_shortest_edge_size

__all__ = [
    "SampleError",
    "build_eval_views",
    "collate",
    "corner_crop_boxes",
    "load_image",
    "resize_shortest_edge_size",
]
