"""The comparison on the same attention-mask decisions (``cropformer.export.decisions``): recorded
in call order, taken from another run, ties told from real differences."""

from __future__ import annotations

import pytest
import torch
from export_builders import metadata, small_net

from cropformer.export.decisions import attention_decisions, forced_decisions
from cropformer.export.verify import RAW_TOLERANCE, accepted, compare, raw_outputs, synthetic_photo
from cropformer.inference.fusion import MultiViewFusion

PHOTO = synthetic_photo(300, 410, seed=1)


def _batch():
    from cropformer.data.collate import collate
    from cropformer.data.views import InferenceViews
    from cropformer.inference.predictor import EvalViews

    views = EvalViews(InferenceViews(**metadata(5)["test_settings"]))
    return collate([views(PHOTO, 0)])


def _run(net, batch, override=None):
    args = {"num_views": 5, "view_sizes": batch["view_sizes"], "aux": False}
    with torch.no_grad(), attention_decisions(net.decoder, override) as recorded:
        out = net(batch["images"], **args)
    return raw_outputs(out), recorded


def test_recorded_in_call_order_and_replayed_exactly() -> None:
    net = small_net("regnet")
    batch = _batch()
    plain, recorded = _run(net, batch)
    layers = net.decoder.num_layers
    assert len(recorded) == 2 * (1 + layers)  # image-level heads, then batch-level heads
    assert recorded[0].shape[0] == 5 and recorded[1 + layers].shape[0] == 1
    replayed, again = _run(net, batch, override=recorded)
    assert all(torch.equal(a, b) for a, b in zip(plain, replayed))
    assert forced_decisions(again, recorded) == (0, 0.0)
    assert "_blocked" not in net.decoder.__dict__  # the class's method again


def test_override_count_and_shape_are_checked() -> None:
    net = small_net("regnet")
    batch = _batch()
    _, recorded = _run(net, batch)
    with pytest.raises(ValueError, match="the run makes more"):
        _run(net, batch, override=recorded[:-1])
    with pytest.raises(ValueError, match="more than the run makes"):
        _run(net, batch, override=[*recorded, recorded[-1]])
    with pytest.raises(ValueError, match="override shape"):
        _run(net, batch, override=[recorded[0][:, :1], *recorded[1:]])
    assert "_blocked" not in net.decoder.__dict__  # restored after an error too


class _Flipped(torch.nn.Module):
    """The eager network deciding one cell the other way (a stand-in for a runtime): in the
    batch-level pass's first layer, the cell nearest the threshold (a tie) or the farthest. It
    returns its decision logits as a file exported with ``decisions=True`` does."""

    def __init__(self, net: torch.nn.Module, nearest: bool) -> None:
        super().__init__()
        self.net, self.nearest = net, nearest
        self.last_decisions: list[torch.Tensor] = []

    def forward(self, images, num_views, view_sizes):
        decoder = self.net.decoder
        blocked, target = decoder._blocked, 1 + decoder.num_layers
        self.last_decisions = []

        def decide(logits: torch.Tensor) -> torch.Tensor:
            if len(self.last_decisions) == target:
                logits = logits.clone()
                flat = logits.view(-1)
                size = flat.abs()
                # nearest: the smallest logit whose sign decides (sigmoid rounds to 0.5 below)
                near = size.masked_fill(size < 1e-6, float("inf")).argmin()
                index = int(near if self.nearest else size.argmax())
                flat[index] = -flat[index]
            self.last_decisions.append(logits)
            return blocked(logits)

        decoder._blocked = decide
        try:
            return self.net(images, num_views=num_views, view_sizes=view_sizes, aux=False)
        finally:
            del decoder._blocked


@pytest.mark.parametrize("nearest", [True, False])
def test_compare_on_the_same_decisions(nearest: bool) -> None:
    """Same decisions: eager agrees exactly; the forced cell's margin tells a tie (the cell
    nearest the threshold) from a real difference (the farthest)."""
    net = small_net("regnet")
    settings = metadata(5)["test_settings"]
    fusion = MultiViewFusion(decoder="B-OC")
    result = compare(net, _Flipped(net, nearest), fusion, settings, [PHOTO])
    same = result["same_decisions"]
    assert same["raw_relative_error"] <= 1e-6 and same["forced"] == 1
    if nearest:
        assert same["forced_margin"] <= RAW_TOLERANCE
    else:
        assert same["forced_margin"] == pytest.approx(1.0)
        # a far flip passes only when the plain outputs agree anyway
        assert accepted(result) == (
            result["raw_relative_error"] <= RAW_TOLERANCE and result["pixel_agreement"] >= 0.999
        )


def test_accepted() -> None:
    ok = {"raw_relative_error": 5e-4, "pixel_agreement": 1.0}
    assert accepted(ok) and not accepted({**ok, "pixel_agreement": 0.99})
    far = {"raw_relative_error": 5e-3, "pixel_agreement": 1.0}
    assert not accepted(far)
    tie = {"raw_relative_error": 1e-6, "forced": 1, "forced_margin": 1e-6}
    assert accepted({**far, "same_decisions": tie})
    assert not accepted({**far, "same_decisions": {**tie, "forced_margin": 0.1}})
    assert not accepted({**far, "same_decisions": {**tie, "raw_relative_error": 2e-3}})
