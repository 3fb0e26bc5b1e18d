"""The CropFormer network (Mask2Former is its single-view mode).

Parts, each a plain ``nn.Module`` composed by Hydra ``_target_``:
``backbone.TimmBackbone`` -> ``pixel_decoder.MSDeformAttnPixelDecoder`` ->
``decoder.MaskedAttentionDecoder`` (image-level and batch-level passes, shared weights) with
``association.QueryAssociation`` between the passes, wired by ``cropformer.CropFormer``.
"""

from cropformer.model.cropformer import CropFormer

__all__ = ["CropFormer"]
