"""Multi-scale deformable attention (Deformable DETR), pure PyTorch.

Two cores with the same math (bilinear, zero padding, ``align_corners=False``):

- :func:`ms_deform_attn_core` follows the official CPU fallback: each level's values are sampled
  with ``grid_sample`` at ``2 * location - 1`` and summed with the attention weights. Autograd
  keeps the (N*M, D, Lq, L*P) samples for backward.
- :func:`ms_deform_attn_core_gather` (default of :class:`MSDeformAttn`) gathers the 4 corner
  rows of every point with one weighted ``embedding_bag`` and has an analytic, chunked backward
  that keeps only its inputs; about 2.5x faster forward and forward+backward on CPU.

Both run on any device and dtype. :class:`MSDeformAttn` itself follows autocast; the pixel
decoder keeps it in fp32 by disabling autocast as a whole (official; ``force_fp32``).

Longer than 450 lines on purpose: the gather core's forward, analytic backward and its chunking
helpers share private index structures (``_Levels``, ``_Points``) and are one unit; the
reference core and the module sit beside it so the equality tests read one file.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_shapes(
    value: Tensor, spatial_shapes: list[tuple[int, int]], sampling_locations: Tensor
) -> None:
    """ValueError when the levels of ``spatial_shapes`` disagree with the inputs."""
    L = sampling_locations.shape[3]
    if len(spatial_shapes) != L:
        raise ValueError(f"spatial_shapes has {len(spatial_shapes)} levels, locations have {L}")
    total = sum(int(h) * int(w) for h, w in spatial_shapes)
    if total != value.shape[1]:
        raise ValueError(f"value has {value.shape[1]} tokens, spatial_shapes sum to {total}")


def ms_deform_attn_core(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Weighted sum of bilinear samples of ``value`` at ``sampling_locations``.

    Args:
        value: values of all levels, flattened level by level (row-major within a level).
        spatial_shapes: (h, w) of each level, in the order of ``value``.
        sampling_locations: normalised (x, y) in [0, 1] of each sampling point (0 = left/top
            edge of the map, 1 = right/bottom edge).
        attention_weights: weight of each point (softmax over levels x points already applied).

    Shape:
        value: (N, S, M, D) with S = sum of h*w, M heads, D channels per head.
        sampling_locations: (N, Lq, M, L, P, 2).
        attention_weights: (N, Lq, M, L, P).
        returns (N, Lq, M*D).
    """
    _check_shapes(value, spatial_shapes, sampling_locations)
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    sizes = [h * w for h, w in spatial_shapes]
    value_levels = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (N, h*w, M, D) -> (N*M, D, h, w)
        v = value_levels[level].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, D, Lq, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(N, M * D, Lq).transpose(1, 2).contiguous()


# names accepted by MSDeformAttn(impl=...)
MSDA_IMPLS = ("gather", "grid_sample")


# Byte budget of the per-chunk transients (corner indices, weights, sort buffers, dot products).
_CHUNK_BYTES = 256 * 2**20


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """Compute dtype: half types are computed (and accumulated) in fp32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _Levels:
    """Geometry of the zero-padded value table used by the gather core.

    Every level map gets a 1-pixel zero border, so the 4 corners of any point whose top-left
    corner lies in [-1, h-1] x [-1, w-1] are rows of the table (no per-corner bounds checks);
    points further out get weight 0. Table rows are ordered (n, m, level, y, x).

    Shape: wh (L, 1, 2) as (w, h); corner_offsets (L, 1, 4); head_base (N, M, L).
    """

    def __init__(
        self,
        spatial_shapes: list[tuple[int, int]],
        N: int,
        M: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.shapes = spatial_shapes
        self.padded = [(h + 2) * (w + 2) for h, w in spatial_shapes]
        self.starts = [sum(self.padded[:i]) for i in range(len(spatial_shapes))]
        self.size = sum(self.padded)  # Sp: padded tokens per (n, m)
        self.rows = N * M * self.size
        L = len(spatial_shapes)
        hw = torch.tensor(spatial_shapes, dtype=torch.long, device=device)
        w = hw[:, 1]
        # integer positions are exact in the float dtype below 2**24 (fp32) / 2**53 (fp64)
        exact = 2**24 if dtype != torch.float64 else 2**53
        self.coord_dtype = dtype if max(self.padded) < exact else torch.float64
        self.wh = hw.flip(-1).to(dtype).view(L, 1, 2)
        self.half_wh = self.wh / 2
        self.row_stride = (w + 2).to(self.coord_dtype).view(L, 1)
        self.centre = (w + 3).to(self.coord_dtype).view(L, 1)  # row of pixel (0, 0)
        zero = torch.zeros_like(w)
        self.corner_offsets = torch.stack((zero, zero + 1, w + 2, w + 3), -1).view(L, 1, 4)
        starts = torch.tensor(self.starts, dtype=torch.long, device=device)
        nm = torch.arange(N * M, dtype=torch.long, device=device).view(N, M, 1)
        self.head_base = nm * self.size + starts.view(1, 1, L)


def _padded_table(value: Tensor, lv: _Levels, dtype: torch.dtype) -> Tensor:
    """(N, S, M, D) values -> zero-bordered (N*M*Sp, D) table in ``dtype``."""
    N, _, M, D = value.shape
    table = value.new_zeros(N, M, lv.size, D, dtype=dtype)
    s0 = 0
    for (h, w), ps in zip(lv.shapes, lv.starts):
        dst = table[:, :, ps : ps + (h + 2) * (w + 2)].view(N, M, h + 2, w + 2, D)
        dst[:, :, 1:-1, 1:-1] = value[:, s0 : s0 + h * w].view(N, h, w, M, D).permute(0, 3, 1, 2, 4)
        s0 += h * w
    return table.view(-1, D)


def _unpad_grad(grad_table: Tensor, lv: _Levels, N: int, M: int, D: int) -> Tensor:
    """Gradient of the padded table -> gradient of value (N, S, M, D) (the border is dropped)."""
    g = grad_table.view(N, M, lv.size, D)
    parts = []
    for (h, w), ps in zip(lv.shapes, lv.starts):
        blk = g[:, :, ps : ps + (h + 2) * (w + 2)].view(N, M, h + 2, w + 2, D)
        parts.append(blk[:, :, 1:-1, 1:-1].permute(0, 2, 3, 1, 4).reshape(N, h * w, M, D))
    return torch.cat(parts, 1)


class _Points:
    """Top-left corner row, fractional offsets and masked attention of a chunk of points.

    Shape (R rows = flattened (n, query) pairs of the chunk): anchor (R, M, L, P) int64 rows
    of the padded table; frac (R, M, L, P, 2) as (fx, fy); weight (R, M, L, P) = attention,
    0 for points with no corner on the map.
    """

    def __init__(self, loc: Tensor, attn: Tensor, row0: int, num_queries: int, lv: _Levels):
        R = loc.shape[0]
        # pixel-centre coordinates (align_corners=False, location 0 = left edge = -0.5),
        # rounded exactly as grid_sample's ((2*loc - 1) + 1) * w/2 - 0.5 so that points on a
        # pixel centre take the same side of the bilinear kink (same gradient) as the reference
        xy = loc.mul(2).sub_(1).add_(1).mul_(lv.half_wh).sub_(0.5)
        xy0 = xy.floor()
        # non-finite locations (a diverging run) give NaN outputs, as grid_sample does, instead
        # of out-of-range table rows; the NaN loss is then handled by the NaN policy
        finite = torch.isfinite(xy0).all(-1)
        self.frac = xy.sub_(xy0)
        top_left = torch.minimum(xy0.clamp(min=-1), lv.wh - 1).nan_to_num_(nan=-1.0)
        inside = (top_left == xy0).all(-1)
        top_left = top_left.to(lv.coord_dtype)
        pos = torch.addcmul(top_left[..., 0] + lv.centre, top_left[..., 1], lv.row_stride)
        n = torch.arange(row0, row0 + R, device=loc.device) // num_queries
        self.anchor = pos.long().add_(lv.head_base.index_select(0, n)[..., None])
        self.weight = torch.where(finite, attn * inside, float("nan"))
        self.inside = inside

    def corner_weights(self, with_attention: bool = True) -> tuple[Tensor, Tensor]:
        """(wx, wy), each (R, M, L, P, 2): bilinear factors along x and y (wy x weight)."""
        fx, fy = self.frac.unbind(-1)
        wx = torch.stack((1 - fx, fx), -1)
        wy = torch.stack((1 - fy, fy), -1)
        if with_attention:
            wy = wy * self.weight[..., None]
        return wx, wy

    def corner_rows(self, lv: _Levels) -> Tensor:
        """Rows of the 4 corners, ordered (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1)."""
        return self.anchor[..., None] + lv.corner_offsets


def _chunk_rows(num_rows: int, per_row_bytes: int) -> int:
    return max(1, min(num_rows, _CHUNK_BYTES // max(1, per_row_bytes)))


def _flat_inputs(
    value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> tuple[torch.dtype, Tensor, Tensor]:
    N, Lq, M, L, P, _ = sampling_locations.shape
    cdt = _opmath(value.dtype)
    loc = sampling_locations.to(cdt).reshape(N * Lq, M, L, P, 2)
    attn = attention_weights.to(cdt).reshape(N * Lq, M, L, P)
    return cdt, loc, attn


def _gather_forward(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The gather forward (no autograd): one weighted ``embedding_bag`` per chunk of queries."""
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    cdt, loc, attn = _flat_inputs(value, sampling_locations, attention_weights)
    lv = _Levels(spatial_shapes, N, M, cdt, value.device)
    table = _padded_table(value, lv, cdt)
    K = L * P * 4
    out = torch.empty(N * Lq * M, D, dtype=cdt, device=value.device)
    step = _chunk_rows(N * Lq, M * K * 24)
    for r0 in range(0, N * Lq, step):
        r1 = min(N * Lq, r0 + step)
        pts = _Points(loc[r0:r1], attn[r0:r1], r0, Lq, lv)
        wx, wy = pts.corner_weights()
        weights = wy[..., :, None] * wx[..., None, :]
        out[r0 * M : r1 * M] = F.embedding_bag(
            pts.corner_rows(lv).view(-1, K),
            table,
            per_sample_weights=weights.view(-1, K),
            mode="sum",
        )
    return out.view(N, Lq, M * D).to(value.dtype)


class _GatherMSDeformAttn(torch.autograd.Function):
    """Gather forward; analytic, chunked backward. Saves only the three inputs."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        value: Tensor,
        spatial_shapes: list[tuple[int, int]],
        sampling_locations: Tensor,
        attention_weights: Tensor,
    ) -> Tensor:
        ctx.spatial_shapes = spatial_shapes
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        return _gather_forward(value, spatial_shapes, sampling_locations, attention_weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        value, sampling_locations, attention_weights = ctx.saved_tensors
        need_v, _, need_loc, need_attn = ctx.needs_input_grad
        gv, gl, ga = _gather_backward(
            grad_out,
            value,
            ctx.spatial_shapes,
            sampling_locations,
            attention_weights,
            need_v,
            need_loc or need_attn,
        )
        return gv, None, gl if need_loc else None, ga if need_attn else None


def _gather_backward(
    grad_out: Tensor,
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    need_value: bool,
    need_points: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of the gather core, chunked over queries.

    value: each point sends weight x output gradient to its 4 corners. Points are sorted by
    top-left corner and one ``embedding_bag`` per corner sums the output-gradient rows of each
    corner row (a transposed gather: no scatter, parallel); the 4 results are shifted onto
    their corners. locations / weights: from the dot products of the output gradient with the
    4 corner values of each point (gather + bmm), as the bilinear derivative.
    """
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    cdt, loc, attn = _flat_inputs(value, sampling_locations, attention_weights)
    lv = _Levels(spatial_shapes, N, M, cdt, value.device)
    table = _padded_table(value, lv, cdt) if need_points else None
    go = grad_out.to(cdt).reshape(N * Lq * M, D)
    K = L * P * 4
    grad_table = torch.zeros(lv.rows, D, dtype=cdt, device=value.device) if need_value else None
    grad_loc = torch.empty_like(loc) if need_points else None
    grad_attn = torch.empty_like(attn) if need_points else None
    step = _chunk_rows(N * Lq, M * K * 40)
    for r0 in range(0, N * Lq, step):
        r1 = min(N * Lq, r0 + step)
        pts = _Points(loc[r0:r1], attn[r0:r1], r0, Lq, lv)
        g = go[r0 * M : r1 * M]
        if grad_table is not None:
            _scatter_corners(grad_table, pts, g, lv)
        if grad_loc is not None and grad_attn is not None and table is not None:
            d = _corner_dots(table, pts.corner_rows(lv).view(-1, K), g).view(-1, 4)
            d00, d01, d10, d11 = d.unbind(-1)
            fx, fy = pts.frac.view(-1, 2).unbind(-1)
            # bilinear form of the 4 corner dot products and its x / y derivatives
            top, bottom = torch.lerp(d00, d01, fx), torch.lerp(d10, d11, fx)
            grad_attn[r0:r1] = torch.lerp(top, bottom, fy).view_as(pts.weight).mul_(pts.inside)
            gx = torch.lerp(d01 - d00, d11 - d10, fy)
            gy = bottom.sub_(top)
            # d(pixel x)/d(location x) = w, d(pixel y)/d(location y) = h
            grad_xy = torch.stack((gx, gy), -1).view_as(pts.frac)
            grad_loc[r0:r1] = grad_xy.mul_(pts.weight[..., None]).mul_(lv.wh)
    gv = None if grad_table is None else _unpad_grad(grad_table, lv, N, M, D).to(value.dtype)
    gl = None if grad_loc is None else grad_loc.view(sampling_locations.shape)
    ga = None if grad_attn is None else grad_attn.view(attention_weights.shape)
    return (
        gv,
        None if gl is None else gl.to(sampling_locations.dtype),
        None if ga is None else ga.to(attention_weights.dtype),
    )


def _scatter_corners(grad_table: Tensor, pts: _Points, grad_rows: Tensor, lv: _Levels) -> None:
    """grad_table[corner row] += corner weight x grad_rows[bag of the point], all 4 corners.

    Points are sorted by top-left row; per corner, one ``embedding_bag`` (bags = table rows)
    sums the weighted output-gradient rows, then the sums are shifted onto that corner's row.

    Shape: grad_table (N*M*Sp, D); grad_rows (R*M, D) for the R rows of ``pts``.
    """
    per_bag = pts.anchor.shape[-1] * pts.anchor.shape[-2]  # L*P points per bag
    key_dtype = torch.int32 if lv.rows < 2**31 else torch.long
    sorted_rows, order = pts.anchor.view(-1).to(key_dtype).sort()
    counts = torch.bincount(sorted_rows, minlength=lv.rows)
    starts = counts.cumsum(0).sub_(counts)
    bags = order.div(per_bag, rounding_mode="floor")
    fx, fy = pts.frac.view(-1, 2).index_select(0, order).unbind(-1)
    a = pts.weight.view(-1).index_select(0, order)
    ay1 = a * fy
    ay0 = a - ay1
    corner_weights = (ay0 - ay0 * fx, ay0 * fx, ay1 - ay1 * fx, ay1 * fx)
    D = grad_table.shape[1]
    NM = lv.rows // lv.size
    dst = grad_table.view(NM, lv.size, D)
    for c, w_c in enumerate(corner_weights):
        per_row = F.embedding_bag(bags, grad_rows, starts, per_sample_weights=w_c, mode="sum").view(
            NM, lv.size, D
        )
        for (h, w), ps in zip(lv.shapes, lv.starts):
            pe = ps + (h + 2) * (w + 2)
            o = (0, 1, w + 2, w + 3)[c]
            dst[:, ps + o : pe] += per_row[:, ps : pe - o]


def _corner_dots(
    table: Tensor, rows: Tensor, grad_rows: Tensor, sparse: bool | None = None
) -> Tensor:
    """<grad_rows[b], table[rows[b, k]]> for every bag b and corner k.

    ``sparse`` (default: on CPU): one fused sampled dense-dense product
    (``torch.sparse.sampled_addmm`` on the CSR pattern of the corners); otherwise gather + bmm
    in chunks (the GPU path; selectable so that it is tested on CPU too).

    Shape: table (T, D); rows (B, K); grad_rows (B, D); returns (B, K).
    """
    B, K = rows.shape
    D = table.shape[1]
    if sparse is None:
        sparse = table.device.type == "cpu"
    if sparse:
        crow = torch.arange(0, B * K + 1, K, dtype=rows.dtype, device=rows.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            pattern = torch.sparse_csr_tensor(
                crow,
                rows.reshape(-1),
                torch.zeros(B * K, dtype=table.dtype),
                size=(B, table.shape[0]),
                check_invariants=False,
            )
            return (
                torch.sparse.sampled_addmm(pattern, grad_rows, table.t(), beta=0.0)
                .values()
                .view(B, K)
            )
    dots = torch.empty(B, K, dtype=table.dtype, device=table.device)
    step = max(1, _CHUNK_BYTES // (K * D * table.element_size()))
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        corners = table.index_select(0, rows[b0:b1].reshape(-1)).view(b1 - b0, K, D)
        torch.bmm(corners, grad_rows[b0:b1, :, None], out=dots[b0:b1, :, None])
    return dots


def ms_deform_attn_core_gather(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Same result as :func:`ms_deform_attn_core`, computed by gathering the 4 corner rows of
    every sampling point (one weighted ``embedding_bag`` per chunk) instead of ``grid_sample``.

    Backward is analytic and chunked: only the three inputs are saved for it (never a
    (N*M, D, Lq, L*P) stack). Half types are computed in fp32 and cast back.

    Shape:
        value: (N, S, M, D) with S = sum of h*w, M heads, D channels per head.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), 0 = left/top edge.
        attention_weights: (N, Lq, M, L, P).
        returns (N, Lq, M*D).
    """
    _check_shapes(value, spatial_shapes, sampling_locations)
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    if torch.is_grad_enabled() and (
        value.requires_grad or sampling_locations.requires_grad or attention_weights.requires_grad
    ):
        out: Tensor = _GatherMSDeformAttn.apply(
            value, shapes, sampling_locations, attention_weights
        )
        return out
    return _gather_forward(value, shapes, sampling_locations, attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with the official parameterisation and initialisation.

    Args:
        dim: model width (``value_proj``/``output_proj`` are dim x dim).
        num_levels: number of feature levels L.
        num_heads: attention heads M (dim must be divisible by it).
        num_points: sampling points per head and level P.
        impl: core implementation: "gather" (:func:`ms_deform_attn_core_gather`, faster and
            keeps only its inputs for backward) or "grid_sample" (:func:`ms_deform_attn_core`,
            the official CPU formulation). Same math; outputs agree to float rounding.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_levels: int = 3,
        num_heads: int = 8,
        num_points: int = 4,
        impl: str = "gather",
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if impl not in MSDA_IMPLS:
            raise ValueError(
                f"impl={impl!r} is not a deformable-attention core; choose {MSDA_IMPLS}"
            )
        self.impl = impl
        self.dim = dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: offsets start on a ring (head h points at angle 2*pi*h/M, point p at
        distance p+1), uniform attention weights, xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        ring = torch.stack([angles.cos(), angles.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True)[0]
        ring = ring.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        ring = ring * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_input: Tensor,
        spatial_shapes: list[tuple[int, int]],
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from each query to P points per head and level around its reference point.

        Shape:
            query: (N, Lq, C); reference_points: (N, Lq, L, 2) normalised (x, y);
            value_input: (N, S, C); padding_mask: (N, S) bool, True = padding (optional).
            returns (N, Lq, C).
        """
        N, Lq, _ = query.shape
        S = value_input.shape[1]
        M, L, P = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.dim // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1)
        weights = weights.view(N, Lq, M, L, P)
        # offsets are in pixels of each level: divide by (w, h)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        core = ms_deform_attn_core_gather if self.impl == "gather" else ms_deform_attn_core
        out = core(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
