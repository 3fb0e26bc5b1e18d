"""Export the network (backbone, pixel decoder, image-level pass, association, batch-level pass)
to ONNX / OpenVINO files that carry the test settings and fusion options they were made with, and
run them (ONNX Runtime, OpenVINO) behind the network's call contract.

- ``files``: ``export_network`` / ``read_metadata``; ``graph``: what is exported;
- ``session``: ``ExportedNetwork``, called like ``CropFormer`` (``EntityPredictor``, ``eval.py``
  and the API take it in place of the eager network);
- ``cache``: export on first use into ``<checkpoint>.exported/`` next to the checkpoint;
- ``int8``: post-training quantization; ``verify``: agreement with the eager network.

The fusion at full resolution stays in the library (``inference.fusion``).
"""

from cropformer.export.files import EXPORT_FORMATS, export_network, read_metadata
from cropformer.export.graph import OUTPUT_NAMES, ExportGraph
from cropformer.export.session import RUNTIMES, ExportedNetwork

__all__ = [
    "EXPORT_FORMATS",
    "OUTPUT_NAMES",
    "RUNTIMES",
    "ExportGraph",
    "ExportedNetwork",
    "export_network",
    "read_metadata",
]
