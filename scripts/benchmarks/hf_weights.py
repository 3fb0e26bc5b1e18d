"""Copy our Mask2Former-mode network's weights into transformers' Mask2Former (benchmark row 2).

``hf_state_dict(ours_net)`` renames (and where needed splits) the tensors of our
``CropFormer`` (association None, timm Swin backbone with per-stage norms, deformable pixel
decoder, masked-attention decoder) to the keys of ``Mask2FormerForUniversalSegmentation`` with a
``SwinBackbone``; ``copy_ours_to_hf`` loads them and checks that every parameter of the
transformers model was written. With both models in eval mode and the same normalised, padded
input, the two compute the same class and mask logits up to float rounding.

Layout facts behind the mapping (read from both implementations):

- Swin attention: timm has one fused ``qkv`` projection (rows q, k, v); transformers has separate
  ``q_proj``/``k_proj``/``v_proj``. Relative position bias tables have the same layout (index
  ``(dy + w - 1) * (2w - 1) + (dx + w - 1)``), the index buffers are derived, not copied.
- Swin patch merging: timm applies it at the start of stage i + 1, transformers at the end of
  stage i; the 4 sub-grids are concatenated in the same order on both sides
  ((0,0), (1,0), (0,1), (1,1) as (row, col)), so the weights copy unchanged.
- transformers' backbone runs with ``always_partition=True`` (window 7 kept on small maps, padding
  before the shift), the same windowing as our ``swin_official_windows=True``.
- Decoder self-attention: ours is ``nn.MultiheadAttention`` (fused ``in_proj``), transformers'
  has separate q/k/v; the cross-attention is ``nn.MultiheadAttention`` on both sides.
- transformers' ``swin.layernorm`` (final norm of SwinModel) is unused by the backbone output and
  is left as initialised.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

_SWIN = "model.pixel_level_module.encoder.swin."
_NORMS = "model.pixel_level_module.encoder.hidden_states_norms."
_PIX = "model.pixel_level_module.decoder."
_TM = "model.transformer_module."
_DEC = "model.transformer_module.decoder."

# transformers' keys that are allowed to stay unwritten: unused final Swin norm, loss buffer
_HF_NOT_COPIED = (re.compile(r"^model\.pixel_level_module\.encoder\.swin\.layernorm\."),)

Rename = Callable[[re.Match[str]], str]


def _t(template: str) -> Rename:
    return lambda m: m.expand(template)


# (our key pattern, transformers' key): plain renames
_RENAMES: list[tuple[re.Pattern[str], Rename]] = [
    # --- backbone
    (
        re.compile(r"^backbone\.body\.model\.patch_embed\.proj\.(weight|bias)$"),
        _t(_SWIN + r"embeddings.patch_embeddings.projection.\1"),
    ),
    (
        re.compile(r"^backbone\.body\.model\.patch_embed\.norm\.(weight|bias)$"),
        _t(_SWIN + r"embeddings.norm.\1"),
    ),
    (
        re.compile(r"^backbone\.body\.model\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)$"),
        _t(_SWIN + r"encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    ),
    (
        re.compile(r"^backbone\.body\.model\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)$"),
        _t(_SWIN + r"encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    ),
    (
        re.compile(
            r"^backbone\.body\.model\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$"
        ),
        _t(_SWIN + r"encoder.layers.\1.blocks.\2.attention.o_proj.\3"),
    ),
    (
        re.compile(
            r"^backbone\.body\.model\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$"
        ),
        _t(
            _SWIN
            + r"encoder.layers.\1.blocks.\2.attention.relative_position_bias."
            + "relative_position_bias_table"
        ),
    ),
    (
        re.compile(r"^backbone\.body\.model\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12])\.(.+)$"),
        _t(_SWIN + r"encoder.layers.\1.blocks.\2.mlp.\3.\4"),
    ),
    (
        # timm: merging at the start of stage i + 1; transformers: at the end of stage i
        re.compile(r"^backbone\.body\.model\.layers\.(\d+)\.downsample\.(norm|reduction)\.(.+)$"),
        lambda m: f"{_SWIN}encoder.layers.{int(m.group(1)) - 1}.downsample.{m[2]}.{m[3]}",
    ),
    (
        re.compile(r"^backbone\.out_norms\.(\d+)\.(weight|bias)$"),
        lambda m: f"{_NORMS}stage{int(m.group(1)) + 1}.{m[2]}",
    ),
    # --- pixel decoder
    (re.compile(r"^pixel_decoder\.level_embed$"), _t(_PIX + "level_embed")),
    (
        re.compile(r"^pixel_decoder\.input_proj\.(\d+)\.([01])\.(.+)$"),
        _t(_PIX + r"input_projections.\1.\2.\3"),
    ),
    (
        re.compile(r"^pixel_decoder\.encoder_layers\.(\d+)\.attn\.(.+)$"),
        _t(_PIX + r"encoder.layers.\1.self_attn.\2"),
    ),
    (
        re.compile(r"^pixel_decoder\.encoder_layers\.(\d+)\.norm1\.(.+)$"),
        _t(_PIX + r"encoder.layers.\1.self_attn_layer_norm.\2"),
    ),
    (
        re.compile(r"^pixel_decoder\.encoder_layers\.(\d+)\.linear([12])\.(.+)$"),
        _t(_PIX + r"encoder.layers.\1.fc\2.\3"),
    ),
    (
        re.compile(r"^pixel_decoder\.encoder_layers\.(\d+)\.norm2\.(.+)$"),
        _t(_PIX + r"encoder.layers.\1.final_layer_norm.\2"),
    ),
    (
        re.compile(r"^pixel_decoder\.lateral_convs\.(\d+)\.([01])\.(.+)$"),
        lambda m: f"{_PIX}adapter_{int(m.group(1)) + 1}.{m[2]}.{m[3]}",
    ),
    (
        re.compile(r"^pixel_decoder\.output_convs\.(\d+)\.([01])\.(.+)$"),
        lambda m: f"{_PIX}layer_{int(m.group(1)) + 1}.{m[2]}.{m[3]}",
    ),
    (re.compile(r"^pixel_decoder\.mask_features\.(.+)$"), _t(_PIX + r"mask_projection.\1")),
    # --- masked-attention decoder
    (re.compile(r"^decoder\.query_feat\.weight$"), _t(_TM + "queries_features.weight")),
    (re.compile(r"^decoder\.query_pos\.weight$"), _t(_TM + "queries_embedder.weight")),
    (re.compile(r"^decoder\.level_embed\.weight$"), _t(_TM + "level_embed.weight")),
    (
        re.compile(r"^decoder\.input_proj\.(\d+)\.(weight|bias)$"),
        _t(_TM + r"input_projections.\1.\2"),
    ),
    (
        re.compile(r"^decoder\.cross_attn_layers\.(\d+)\.attn\.(.+)$"),
        _t(_DEC + r"layers.\1.cross_attn.\2"),
    ),
    (
        re.compile(r"^decoder\.cross_attn_layers\.(\d+)\.norm\.(.+)$"),
        _t(_DEC + r"layers.\1.cross_attn_layer_norm.\2"),
    ),
    (
        re.compile(r"^decoder\.self_attn_layers\.(\d+)\.attn\.out_proj\.(.+)$"),
        _t(_DEC + r"layers.\1.self_attn.out_proj.\2"),
    ),
    (
        re.compile(r"^decoder\.self_attn_layers\.(\d+)\.norm\.(.+)$"),
        _t(_DEC + r"layers.\1.self_attn_layer_norm.\2"),
    ),
    (
        re.compile(r"^decoder\.ffn_layers\.(\d+)\.linear([12])\.(.+)$"),
        _t(_DEC + r"layers.\1.fc\2.\3"),
    ),
    (
        re.compile(r"^decoder\.ffn_layers\.(\d+)\.norm\.(.+)$"),
        _t(_DEC + r"layers.\1.final_layer_norm.\2"),
    ),
    (re.compile(r"^decoder\.decoder_norm\.(.+)$"), _t(_DEC + r"layernorm.\1")),
    (re.compile(r"^decoder\.class_head\.(.+)$"), _t(r"class_predictor.\1")),
    (
        re.compile(r"^decoder\.mask_head\.layers\.(\d+)\.(.+)$"),
        _t(_DEC + r"mask_predictor.mask_embedder.\1.0.\2"),
    ),
]

# fused q/k/v projections (rows q, k, v) that transformers keeps as three Linear layers
_SPLITS: list[tuple[re.Pattern[str], Callable[[re.Match[str], str], str]]] = [
    (
        re.compile(
            r"^backbone\.body\.model\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"
        ),
        lambda m, p: f"{_SWIN}encoder.layers.{m[1]}.blocks.{m[2]}.attention.{p}_proj.{m[3]}",
    ),
    (
        re.compile(r"^decoder\.self_attn_layers\.(\d+)\.attn\.in_proj_(weight|bias)$"),
        lambda m, p: f"{_DEC}layers.{m[1]}.self_attn.{p}_proj.{m[2]}",
    ),
]


def hf_state_dict(ours_net: nn.Module) -> dict[str, Tensor]:
    """transformers' Mask2Former state dict holding our network's weights.

    Raises ValueError if ``ours_net`` has a batch-level pass (association) or a tensor no rule
    maps (e.g. a ResNet backbone).
    """
    if getattr(ours_net, "association", None) is not None:
        raise ValueError(
            "ours_net has an association module (CropFormer); transformers' Mask2Former has no "
            "batch-level pass: build the network with model=mask2former_swint"
        )
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in ours_net.state_dict().items():
        if key.endswith(("relative_position_index", "num_batches_tracked")):
            continue  # derived buffers
        if key.startswith("backbone.body.model.") and ".attn_mask" in key:
            continue
        for pattern, split_fn in _SPLITS:
            m = pattern.match(key)
            if m:
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    out[split_fn(m, part)] = chunk.clone()
                break
        else:
            for pattern, rename in _RENAMES:
                m = pattern.match(key)
                if m:
                    out[rename(m)] = value.clone()
                    break
            else:
                unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"{len(unmapped)} tensors of ours_net have no transformers counterpart, e.g. "
            f"{unmapped[:5]}; only the Swin Mask2Former (model=mask2former_swint) is supported"
        )
    return out


def copy_ours_to_hf(ours_net: nn.Module, hf_model: Any) -> None:
    """Load our network's weights into ``Mask2FormerForUniversalSegmentation`` in place.

    Raises ValueError if a transformers parameter is left unwritten (other than the unused final
    Swin LayerNorm), if a converted key does not exist there, or if shapes differ (the two were
    built with different configurations).
    """
    load_hf_state_dict(hf_model, hf_state_dict(ours_net))


def load_hf_state_dict(hf_model: Any, sd: dict[str, Tensor]) -> None:
    """Load a converted state dict (``hf_state_dict``) into ``hf_model`` in place, checked.

    Lets a process that never imports our network (benchmark row 2) load the weights from a
    file. Raises ValueError as ``copy_ours_to_hf`` does.
    """
    target = hf_model.state_dict()
    unknown = sorted(set(sd) - set(target))
    if unknown:
        raise ValueError(
            f"{len(unknown)} converted keys do not exist in the transformers model, e.g. "
            f"{unknown[:5]}: build both with the same configuration"
        )
    wrong = [
        f"{k}: ours {tuple(v.shape)} vs transformers {tuple(target[k].shape)}"
        for k, v in sd.items()
        if v.shape != target[k].shape
    ]
    if wrong:
        raise ValueError(f"shape mismatch between the two configurations: {wrong[:5]}")
    params = {name for name, _ in hf_model.named_parameters()}
    missing = sorted(k for k in params - set(sd) if not any(p.match(k) for p in _HF_NOT_COPIED))
    if missing:
        raise ValueError(
            f"{len(missing)} transformers parameters would keep their random values, e.g. "
            f"{missing[:5]}"
        )
    with torch.no_grad():
        for k, v in sd.items():
            target[k].copy_(v)
