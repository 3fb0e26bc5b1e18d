"""Inference: fuse the views of an image into non-overlapping entities at original resolution."""

from cropformer.inference.fusion import DECODER_CHOICES, MultiViewFusion

__all__ = ["DECODER_CHOICES", "MultiViewFusion"]
