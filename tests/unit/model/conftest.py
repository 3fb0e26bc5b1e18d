"""Fixtures of the model tests."""

from __future__ import annotations

import pytest
from model_builders import build_net

from cropformer.model.cropformer import CropFormer


@pytest.fixture
def net() -> CropFormer:
    return build_net()
