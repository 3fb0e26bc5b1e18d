"""`python -m cropformer.cli.summary`: parameter counts of the official configurations."""

from __future__ import annotations

import json

import pytest

from cropformer.cli.summary import main

# official counts (../shared/reference/official_keys/*.txt headers)
OFFICIAL = {
    "cropformer_r50": (23_454_912, 6_035_904, 14_459_138, 1_578_752, 45_528_706),
    "cropformer_swint": (27_520_698, 5_421_504, 14_459_138, 1_578_752, 48_980_092),
    "cropformer_swinl": (194_998_164, 5_790_144, 14_459_138, 1_578_752, 216_826_198),
    "mask2former_r50": (23_454_912, 6_035_904, 14_459_138, 0, 43_949_954),
    "mask2former_swint": (27_520_698, 5_421_504, 14_459_138, 0, 47_401_340),
    "mask2former_swinl": (194_998_164, 5_790_144, 14_459_138, 0, 215_247_446),
    "cropformer_hornetl": (200_272_512, 5_790_144, 14_510_338, 1_578_752, 222_151_746),
    # issue 13: the CropFormer HorNet-L counts less the association module
    "mask2former_hornetl": (200_272_512, 5_790_144, 14_510_338, 0, 220_572_994),
}
PARTS = ("backbone", "pixel_decoder", "decoder", "association", "total")


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_counts_match_official_within_one_percent(name: str, capsys) -> None:
    counts = main([f"model={name}"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == counts
    assert set(counts) == set(PARTS)
    for part, official in zip(PARTS, OFFICIAL[name]):
        assert abs(counts[part] - official) <= 0.01 * official, (part, counts[part], official)


@pytest.mark.parametrize("name", ["cropformer_hornetl", "mask2former_hornetl"])
def test_hornet_counts_equal_official_exactly(name: str, capsys) -> None:
    main([f"model={name}"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == dict(
        zip(PARTS, OFFICIAL[name])
    )


def test_overrides_are_applied(capsys) -> None:
    small = main(["model=cropformer_tiny", "model.net.decoder.num_queries=10"])
    default = main(["model=cropformer_tiny"])
    out = capsys.readouterr().out
    assert "backbone" in out and "total" in out
    # query_feat and query_pos: 2 x 20 fewer rows of width 64
    assert default["decoder"] - small["decoder"] == 2 * 20 * 64
