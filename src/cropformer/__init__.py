"""CropFormer: high-quality entity segmentation on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
