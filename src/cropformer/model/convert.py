"""Official detectron2 CropFormer / Mask2Former checkpoints -> this package.

``convert_official_state_dict`` renames the keys of an official ``model.state_dict()`` (keys as
in ``shared/reference/official_keys``) to ours; ``build_from_official_config`` builds our network
from an official (detectron2 yacs) config dict, so that the converted weights load strictly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from cropformer.model.association import QueryAssociation
from cropformer.model.backbone import TimmBackbone
from cropformer.model.cropformer import CropFormer
from cropformer.model.decoder import MaskedAttentionDecoder
from cropformer.model.hornet import HorNet
from cropformer.model.pixel_decoder import MSDeformAttnPixelDecoder
from cropformer.utils.errors import UserError

# Official keys that are deliberately not carried over: derived buffers and loss buffers.
IGNORED_KEYS = (
    re.compile(r".*\.relative_position_index$"),  # Swin: recomputed from the window size
    re.compile(r"^criterion(_2d|_3d)?\.empty_weight$"),  # loss class weights, not network
    re.compile(r".*\.num_batches_tracked$"),
)

_P = "sem_seg_head.pixel_decoder."
_D = "sem_seg_head.predictor."

Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _sub(template: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.expand(template)


def _swin_downsample(m: re.Match[str]) -> str:
    # official: patch merging at the END of stage i; timm: at the START of stage i + 1
    return f"backbone.body.model.layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"


def _res_block(m: re.Match[str]) -> str:
    stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
    rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    rest = re.sub(r"^shortcut\.weight$", "downsample.0.weight", rest)
    return f"backbone.body.layer{stage - 1}.{block}.{rest}"


def _sublayer_rules(official: str, attn: str, ours: str) -> list[Rule]:
    """The attention and norm rules of an official attention-layer list (``official.<i>.<attn>``
    and ``official.<i>.norm``) -> ours (``ours.<i>.attn`` / ``ours.<i>.norm``)."""
    src = re.escape(official)
    return [
        (re.compile(rf"^{src}\.(\d+)\.{attn}\.(.+)$"), _sub(rf"{ours}.\1.attn.\2")),
        (re.compile(rf"^{src}\.(\d+)\.norm\.(.+)$"), _sub(rf"{ours}.\1.norm.\2")),
    ]


_RULES: list[Rule] = [
    # --- backbone: Swin (D2SwinTransformer) -> timm SwinTransformer (getter features)
    (re.compile(r"^backbone\.patch_embed\.(.+)$"), _sub(r"backbone.body.model.patch_embed.\1")),
    (
        re.compile(r"^backbone\.layers\.(\d+)\.blocks\.(.+)$"),
        _sub(r"backbone.body.model.layers.\1.blocks.\2"),
    ),
    (re.compile(r"^backbone\.layers\.(\d+)\.downsample\.(.+)$"), _swin_downsample),
    (re.compile(r"^backbone\.norm(\d)\.(.+)$"), _sub(r"backbone.out_norms.\1.\2")),
    # --- backbone: HorNet (D2HorNet) -> ours (same names; output norms as for Swin above)
    (
        re.compile(r"^backbone\.(downsample_layers|stages)\.(\d+)\.(.+)$"),
        _sub(r"backbone.\1.\2.\3"),
    ),
    # --- backbone: detectron2 ResNet -> timm ResNet (features_only)
    (re.compile(r"^backbone\.stem\.conv1\.weight$"), _sub("backbone.body.conv1.weight")),
    (re.compile(r"^backbone\.stem\.conv1\.norm\.(.+)$"), _sub(r"backbone.body.bn1.\1")),
    (re.compile(r"^backbone\.res(\d)\.(\d+)\.(.+)$"), _res_block),
    # --- pixel decoder
    (
        re.compile(rf"^{_P}input_proj\.(\d+)\.(\d)\.(.+)$"),
        _sub(r"pixel_decoder.input_proj.\1.\2.\3"),
    ),
    (re.compile(rf"^{_P}transformer\.level_embed$"), _sub("pixel_decoder.level_embed")),
    (
        re.compile(rf"^{_P}transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)$"),
        _sub(r"pixel_decoder.encoder_layers.\1.attn.\2"),
    ),
    (
        re.compile(
            rf"^{_P}transformer\.encoder\.layers\.(\d+)\.(norm1|norm2|linear1|linear2)\.(.+)$"
        ),
        _sub(r"pixel_decoder.encoder_layers.\1.\2.\3"),
    ),
    (re.compile(rf"^{_P}mask_features\.(.+)$"), _sub(r"pixel_decoder.mask_features.\1")),
    (
        re.compile(rf"^{_P}adapter_(\d+)\.weight$"),
        lambda m: f"pixel_decoder.lateral_convs.{int(m.group(1)) - 1}.0.weight",
    ),
    (
        re.compile(rf"^{_P}adapter_(\d+)\.norm\.(.+)$"),
        lambda m: f"pixel_decoder.lateral_convs.{int(m.group(1)) - 1}.1.{m.group(2)}",
    ),
    (
        re.compile(rf"^{_P}layer_(\d+)\.weight$"),
        lambda m: f"pixel_decoder.output_convs.{int(m.group(1)) - 1}.0.weight",
    ),
    (
        re.compile(rf"^{_P}layer_(\d+)\.norm\.(.+)$"),
        lambda m: f"pixel_decoder.output_convs.{int(m.group(1)) - 1}.1.{m.group(2)}",
    ),
    # --- association (make_3d); before the decoder rules
    *_sublayer_rules(
        f"{_D}make_3d.enc_crosattn_3d", "multihead_attn", "association.cross_attn_layers"
    ),
    *_sublayer_rules(f"{_D}make_3d.enc_selfattn_3d", "self_attn", "association.self_attn_layers"),
    (re.compile(rf"^{_D}make_3d\.enc_ffn_3d\.(\d+)\.(.+)$"), _sub(r"association.ffn_layers.\1.\2")),
    # --- transformer decoder
    *_sublayer_rules(
        f"{_D}transformer_self_attention_layers", "self_attn", "decoder.self_attn_layers"
    ),
    *_sublayer_rules(
        f"{_D}transformer_cross_attention_layers", "multihead_attn", "decoder.cross_attn_layers"
    ),
    (re.compile(rf"^{_D}transformer_ffn_layers\.(\d+)\.(.+)$"), _sub(r"decoder.ffn_layers.\1.\2")),
    (re.compile(rf"^{_D}decoder_norm\.(.+)$"), _sub(r"decoder.decoder_norm.\1")),
    (re.compile(rf"^{_D}query_feat\.weight$"), _sub("decoder.query_feat.weight")),
    (re.compile(rf"^{_D}(query_embed|static_query)\.weight$"), _sub("decoder.query_pos.weight")),
    (re.compile(rf"^{_D}level_embed\.weight$"), _sub("decoder.level_embed.weight")),
    (re.compile(rf"^{_D}class_embed\.(.+)$"), _sub(r"decoder.class_head.\1")),
    (
        re.compile(rf"^{_D}mask_embed\.layers\.(\d+)\.(.+)$"),
        _sub(r"decoder.mask_head.layers.\1.\2"),
    ),
    (re.compile(rf"^{_D}input_proj\.(\d+)\.(.+)$"), _sub(r"decoder.input_proj.\1.\2")),
]


def official_key_to_ours(key: str) -> str | None:
    """Our key for one official key, or None if no rule maps it."""
    for pattern, fn in _RULES:
        m = pattern.match(key)
        if m:
            return fn(m)
    return None


def convert_official_state_dict(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an official detectron2 state dict to this package's keys.

    Returns our state dict and the official keys no rule could map. Keys in ``IGNORED_KEYS``
    (Swin ``relative_position_index``, the criteria's ``empty_weight``) are dropped silently.
    A ``model`` wrapper (``{"model": state_dict, ...}`` as detectron2 saves) is unwrapped.
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]  # type: ignore[assignment]
    ours: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        if any(p.match(key) for p in IGNORED_KEYS):
            continue
        new = official_key_to_ours(key)
        if new is None:
            unmapped.append(key)
            continue
        if not isinstance(value, Tensor):  # detectron2 .pkl files hold numpy arrays
            value = torch.as_tensor(value)
        ours[new] = value
    return ours, unmapped


# Keys only an official detectron2 CropFormer / Mask2Former state dict has (ours start with
# ``backbone.body.``, ``pixel_decoder.``, ``decoder.``, ... or ``net.`` for a Lightning checkpoint).
_OFFICIAL_HEAD_PREFIX = "sem_seg_head."
_HORNET_STEM = "backbone.downsample_layers.0.0.weight"
_SWIN_STEM = "backbone.patch_embed.proj.weight"
_RESNET_STEM = "backbone.stem.conv1.weight"


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict inside detectron2's ``{"model": state_dict, ...}`` wrapper (or itself)."""
    inner = state_dict.get("model")
    return inner if isinstance(inner, Mapping) else state_dict


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` is an official detectron2 CropFormer / Mask2Former model.

    True for the released ``model_final.pth`` files (``{"model": ...}`` wrapper or the bare
    ``model.state_dict()``) and detectron2 ``.pkl`` dicts: they have ``sem_seg_head.*`` keys, which
    none of our checkpoints (``net.*`` / ``backbone.body.*`` / ``pixel_decoder.*`` keys) has.
    """
    inner = _unwrap(state_dict)
    return any(isinstance(k, str) and k.startswith(_OFFICIAL_HEAD_PREFIX) for k in inner)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(value, "shape", ()))


def detect_official_architecture(state_dict: Mapping[str, Any]) -> str:
    """Our ``model=`` config name for an official state dict, guessed from its keys and shapes.

    ``cropformer_*`` when the association module (``make_3d``) is present, else ``mask2former_*``;
    the backbone from its stem: ``r50`` (detectron2 ResNet-50), ``swint`` / ``swinl`` (Swin patch
    embedding width 96 / 192), ``hornetl`` (HorNet stem width 192). The query count is not part of
    the name (HorNet-L configs have 200 queries, the others 100; see
    :func:`official_num_queries`).

    Raises:
        UserError: not an official state dict, or a backbone of another size or kind (the
            message says what was found and to pass ``model=`` explicitly).
    """
    inner = _unwrap(state_dict)
    if not is_official_state_dict(inner):
        sample = ", ".join(repr(k) for k in list(inner)[:3])
        raise UserError(
            "not an official detectron2 CropFormer/Mask2Former state dict (no 'sem_seg_head.*'"
            f" keys; first keys: {sample or 'none'}); pass one of our checkpoints, or convert the"
            " file with scripts/convert_official_checkpoint.py"
        )
    kind = "cropformer" if any(".make_3d." in k for k in inner) else "mask2former"
    if _RESNET_STEM in inner:
        if any(k.startswith("backbone.res4.6.") for k in inner):  # R101: 23 res4 blocks
            raise UserError(
                "official checkpoint has a ResNet deeper than ResNet-50 (res4 has more than 6"
                " blocks); pass model=<name> with matching overrides"
            )
        return f"{kind}_r50"
    for stem, family, widths in (
        (_SWIN_STEM, "Swin", {96: "swint", 192: "swinl"}),
        (_HORNET_STEM, "HorNet", {192: "hornetl"}),
    ):
        if stem in inner:
            width = _shape(inner[stem])[0] if _shape(inner[stem]) else -1
            if width not in widths:
                known = ", ".join(f"{w} ({n})" for w, n in widths.items())
                raise UserError(
                    f"official checkpoint key {stem!r} has width {width}, not a released {family}"
                    f" size ({known}); pass model=<name> with matching overrides"
                )
            return f"{kind}_{widths[width]}"
    raise UserError(
        "cannot tell the backbone of the official checkpoint from its keys (none of"
        f" {_RESNET_STEM!r}, {_SWIN_STEM!r}, {_HORNET_STEM!r}); pass model=<name>"
    )


def official_num_queries(state_dict: Mapping[str, Any]) -> int | None:
    """Q of an official state dict (rows of ``query_feat``), or None when it has no decoder."""
    query = _unwrap(state_dict).get(f"{_D}query_feat.weight")
    shape = _shape(query) if query is not None else ()
    return shape[0] if shape else None


#: the official class head: C + 1 rows (C classes, then no-object); entity models have C = 1
CLASS_HEAD_KEY = f"{_D}class_embed.weight"
#: its name in this package (``convert_official_state_dict``)
OUR_CLASS_HEAD_KEY = "decoder.class_head.weight"


def class_head_shape(state_dict: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The class head's weight shape (C + 1, hidden) of an official or converted state dict."""
    inner = _unwrap(state_dict)
    head = inner.get(CLASS_HEAD_KEY, inner.get(OUR_CLASS_HEAD_KEY))
    return _shape(head) if head is not None else None


def official_num_classes(state_dict: Mapping[str, Any]) -> int | None:
    """C of an official or converted state dict: rows of the class head less the no-object row
    (1 for the entity models, e.g. 133 for Mask2Former COCO panoptic); None without one.

    Raises:
        UserError: a class head of fewer than 2 rows (names the key and its shape).
    """
    shape = class_head_shape(state_dict)
    if shape is None or len(shape) != 2:
        return None
    if shape[0] < 2:
        raise UserError(
            f"official key {CLASS_HEAD_KEY!r} has shape {shape}: a class head has C + 1 >= 2 "
            "rows (the classes, then no-object); is it a Mask2Former/CropFormer file?"
        )
    return shape[0] - 1


def class_head_mismatch(
    shape: tuple[int, ...], expected: int, *, source: str, fix: str
) -> UserError:
    """The one-line error for a file's class head of ``shape`` (C + 1, hidden) where ``source``
    builds ``expected`` classes: names the official key, both shapes and the override (``fix``)."""
    found = shape[0] - 1
    rest = "".join(f", {s}" for s in shape[1:])

    def what(c: int) -> str:
        return "1 entity class" if c == 1 else f"{c} classes"

    return UserError(
        f"official key {CLASS_HEAD_KEY!r} has shape ({found + 1}{rest}) ({what(found)} + "
        f"no-object) but {source} gives ({expected + 1}{rest}) ({what(expected)}); {fix}"
    )


def official_class_settings(cfg: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(task, class-aware fusion settings) of an official class-aware (resolved) config.

    Mask2Former's ``MODEL.MASK_FORMER.TEST`` flags: a panoptic model evaluates panoptic,
    instance and semantic outputs (``PANOPTIC_ON``: our ``panoptic``), an instance model
    ``INSTANCE_ON`` only, a semantic one ``SEMANTIC_ON`` only; task None when none is on. The
    settings are its ``OBJECT_MASK_THRESHOLD``, ``OVERLAP_THRESHOLD`` and
    ``TEST.DETECTIONS_PER_IMAGE`` (absent ones keep ours, which are the official defaults).
    """
    test = _get(cfg, "MODEL.MASK_FORMER.TEST", {})
    test = test if isinstance(test, Mapping) else {}
    task = next(
        (
            name
            for flag, name in (
                ("PANOPTIC_ON", "panoptic"),
                ("INSTANCE_ON", "instance"),
                ("SEMANTIC_ON", "semantic"),
            )
            if test.get(flag)
        ),
        None,
    )
    settings: dict[str, Any] = {}
    for key, ours in (
        ("OBJECT_MASK_THRESHOLD", "object_mask_threshold"),
        ("OVERLAP_THRESHOLD", "overlap_threshold"),
    ):
        if key in test:
            settings[ours] = float(test[key])
    detections = _get(cfg, "TEST.DETECTIONS_PER_IMAGE", {})
    if isinstance(detections, int) and not isinstance(detections, bool):
        settings["top_k"] = detections
    return task, settings


def _get(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is None:
                raise KeyError(f"official config has no key {dotted!r}")
            return default
        node = node[part]
    return node


# official MODEL.HORNET defaults (mask2former/config.py): HorNet-L GF
_HORNET_DEFAULTS: dict[str, Any] = {
    "DEPTHS": [2, 3, 18, 2],
    "BASE_DIM": 192,
    "GCONV": [
        "partial(gnconv, order=2, s=1/3)",
        "partial(gnconv, order=3, s=1/3)",
        "partial(gnconv, order=4, s=1/3, h=24, w=13, gflayer=GlobalLocalFilter)",
        "partial(gnconv, order=5, s=1/3, h=12, w=7, gflayer=GlobalLocalFilter)",
    ],
    "DROP_PATH_RATE": 0.6,
}
_GCONV = re.compile(r"^\s*partial\(\s*gnconv\s*(?P<args>(,\s*\w+\s*=\s*[\w./]+\s*)*)\)\s*$")


def _number(text: str) -> float:
    """A number of a GCONV string: ``3``, ``0.5`` or a fraction ``1/3`` (never ``eval``)."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


def parse_official_gconv(spec: str) -> tuple[int, float, tuple[int, int] | None]:
    """(order, s, global filter (h, w) or None) of one official ``MODEL.HORNET.GCONV`` entry.

    The official config holds Python source strings that the official code ``eval``s, e.g.
    ``partial(gnconv, order=4, s=1/3, h=24, w=13, gflayer=GlobalLocalFilter)``; they are parsed
    here instead. Official defaults apply to absent arguments (order 5, s 1.0, h 14, w 8).
    """
    m = _GCONV.match(spec)
    if m is None:
        raise ValueError(
            f"MODEL.HORNET.GCONV entry {spec!r} is not of the form 'partial(gnconv, order=.., "
            "s=.., [h=.., w=.., gflayer=GlobalLocalFilter])'"
        )
    args = dict(
        (k.strip(), v.strip())
        for k, _, v in (a.partition("=") for a in m.group("args").split(",") if a.strip())
    )
    unknown = set(args) - {"order", "s", "h", "w", "gflayer"}
    gflayer = args.get("gflayer")
    if unknown or gflayer not in (None, "None", "GlobalLocalFilter"):
        raise ValueError(
            f"MODEL.HORNET.GCONV entry {spec!r}: unsupported argument(s) "
            f"{sorted(unknown) or gflayer!r} (order, s, h, w, gflayer=GlobalLocalFilter only)"
        )
    order = int(args.get("order", "5"))
    scale = _number(args.get("s", "1.0"))
    size = None
    if gflayer == "GlobalLocalFilter":
        size = (int(args.get("h", "14")), int(args.get("w", "8")))
    return order, scale, size


def _hornet_from_official_config(cfg: Mapping[str, Any]) -> HorNet:
    """Our HorNet with the sizes of an official ``MODEL.HORNET`` block (official defaults)."""
    section = _get(cfg, "MODEL.HORNET", {})
    if not isinstance(section, Mapping):
        section = {}
    params = {**_HORNET_DEFAULTS, **section}
    specs = [parse_official_gconv(str(s)) for s in params["GCONV"]]
    scales = {s for _, s, _ in specs}
    if len(scales) != 1:
        raise ValueError(
            f"MODEL.HORNET.GCONV uses different s per stage ({sorted(scales)}); one s only"
        )
    out = list(params.get("OUT_FEATURES", ["res2", "res3", "res4", "res5"]))
    if out != ["res2", "res3", "res4", "res5"]:
        raise ValueError(f"MODEL.HORNET.OUT_FEATURES={out}: only res2..res5 is supported")
    return HorNet(
        base_dim=int(params["BASE_DIM"]),
        depths=[int(d) for d in params["DEPTHS"]],
        orders=[o for o, _, _ in specs],
        scale=scales.pop(),
        global_filter_sizes=[f for _, _, f in specs],
        drop_path_rate=float(params["DROP_PATH_RATE"]),
    )


def build_from_official_config(cfg: Mapping[str, Any]) -> CropFormer:
    """Build our network with the sizes of an official detectron2 config (as a nested dict).

    Supports ``D2SwinTransformer``, ``build_resnet_backbone`` (R50, frozen BN) and ``D2HorNet``
    backbones,
    ``MSDeformAttnPixelDecoder`` and the (CropShared)MultiScaleMaskedTransformerDecoder; the
    association module is built when ``META_ARCHITECTURE`` is ``CropFormer``.
    """
    name = _get(cfg, "MODEL.BACKBONE.NAME")
    backbone: TimmBackbone | HorNet
    if name == "D2SwinTransformer":
        if _get(cfg, "MODEL.SWIN.APE", False):
            raise ValueError("MODEL.SWIN.APE=True (absolute position embedding) is not supported")
        backbone = TimmBackbone(
            model_name="swin_tiny_patch4_window7_224",
            out_norm=True,
            drop_path_rate=float(_get(cfg, "MODEL.SWIN.DROP_PATH_RATE")),
            model_kwargs={
                "embed_dim": int(_get(cfg, "MODEL.SWIN.EMBED_DIM")),
                "depths": tuple(_get(cfg, "MODEL.SWIN.DEPTHS")),
                "num_heads": tuple(_get(cfg, "MODEL.SWIN.NUM_HEADS")),
                "window_size": int(_get(cfg, "MODEL.SWIN.WINDOW_SIZE")),
                "mlp_ratio": float(_get(cfg, "MODEL.SWIN.MLP_RATIO")),
                "qkv_bias": bool(_get(cfg, "MODEL.SWIN.QKV_BIAS")),
            },
        )
    elif name == "build_resnet_backbone":
        depth = int(_get(cfg, "MODEL.RESNETS.DEPTH"))
        if depth not in (50, 101):
            raise ValueError(f"MODEL.RESNETS.DEPTH={depth}: only 50 and 101 are supported")
        backbone = TimmBackbone(
            model_name=f"resnet{depth}",
            out_indices=(1, 2, 3, 4),
            frozen_bn=_get(cfg, "MODEL.RESNETS.NORM") == "FrozenBN",
        )
    elif name == "D2HorNet":
        backbone = _hornet_from_official_config(cfg)
    else:
        raise ValueError(
            f"MODEL.BACKBONE.NAME={name!r} is not supported (Swin, ResNet or HorNet only)"
        )
    conv_dim = int(_get(cfg, "MODEL.SEM_SEG_HEAD.CONVS_DIM"))
    pixel_decoder = MSDeformAttnPixelDecoder(
        in_channels=backbone.channels,
        in_strides=backbone.strides,
        conv_dim=conv_dim,
        mask_dim=int(_get(cfg, "MODEL.SEM_SEG_HEAD.MASK_DIM")),
        num_encoder_layers=int(_get(cfg, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS")),
        num_heads=int(_get(cfg, "MODEL.MASK_FORMER.NHEADS")),
        dropout=float(_get(cfg, "MODEL.MASK_FORMER.DROPOUT")),
        common_stride=int(_get(cfg, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE")),
    )
    decoder = MaskedAttentionDecoder(
        in_channels=conv_dim,
        hidden_dim=int(_get(cfg, "MODEL.MASK_FORMER.HIDDEN_DIM")),
        num_queries=int(_get(cfg, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES")),
        num_heads=int(_get(cfg, "MODEL.MASK_FORMER.NHEADS")),
        ffn_dim=int(_get(cfg, "MODEL.MASK_FORMER.DIM_FEEDFORWARD")),
        num_layers=int(_get(cfg, "MODEL.MASK_FORMER.DEC_LAYERS")) - 1,
        mask_dim=int(_get(cfg, "MODEL.SEM_SEG_HEAD.MASK_DIM")),
        num_classes=int(_get(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES")),
        pre_norm=bool(_get(cfg, "MODEL.MASK_FORMER.PRE_NORM")),
        enforce_input_proj=bool(_get(cfg, "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ")),
    )
    association = None
    if _get(cfg, "MODEL.META_ARCHITECTURE") == "CropFormer":
        association = QueryAssociation(
            dim=int(_get(cfg, "ENTITY.FUSE_ENC_HIDDIEN_DIM")),
            num_heads=int(_get(cfg, "ENTITY.FUSE_ENC_NHEADS")),
            ffn_dim=int(_get(cfg, "ENTITY.FUSE_ENC_DIM_FEEDFORWARD")),
            num_layers=int(_get(cfg, "ENTITY.FUSE_NUM_LAYERS")),
            pre_norm=bool(_get(cfg, "ENTITY.FUSE_ENC_PRE_NORM")),
        )
    return CropFormer(
        backbone=backbone,
        pixel_decoder=pixel_decoder,
        decoder=decoder,
        association=association,
        pixel_mean=tuple(_get(cfg, "MODEL.PIXEL_MEAN")),
        pixel_std=tuple(_get(cfg, "MODEL.PIXEL_STD")),
        size_divisibility=int(_get(cfg, "MODEL.MASK_FORMER.SIZE_DIVISIBILITY")),
    )
