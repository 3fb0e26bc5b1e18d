"""Losses: point sampling, Hungarian matching (optional view axis) and the set criterion."""

from cropformer.losses.criterion import CropFormerCriterion, average_num_masks
from cropformer.losses.matcher import HungarianMatcher
from cropformer.losses.point_sampling import ReplayPointSource, UniformPointSource

__all__ = [
    "CropFormerCriterion",
    "HungarianMatcher",
    "ReplayPointSource",
    "UniformPointSource",
    "average_num_masks",
]
