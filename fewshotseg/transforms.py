"""Paired image / label-map augmentation, torch-native, batched and replayable.

The self-supervised episodes of SSL-ALPNet (METHOD.md, "Self-supervised episode") transform
each copy of a slice and its mask with

* a random affine map (rotation, shift, shear, isotropic scale) about the image centre,
* a small elastic warp: uniform noise in [-1, 1] per pixel, smoothed with a Gaussian of
  ``elastic_sigma`` px (zero padding, truncated at 4 sigma) and multiplied by ``elastic_alpha`` px,
* optionally (``bias_field > 0``; off in the reference) a smooth multiplicative intensity field,
  as a receive coil's sensitivity makes one on MRI, applied above each image's minimum,
* a gamma intensity transform of the image min-max rescaled to [0, 1], then mapped back.

The affine map and the elastic warp are fused into a single resampling: one sampling grid
(the displaced pixel coordinates through the inverse affine map in one batched matrix product,
as ``affine_grid`` does) and one ``grid_sample`` per tensor kind. Images are interpolated
bilinearly, label maps with nearest neighbour, so a warped label map only ever contains its
own values (plus 0 where the grid leaves the image).

Random transforms are split in two steps, as in kornia and TorchIO: :func:`sample_params`
draws a :class:`TransformParams` (plain tensors, one row per batch item) from a
``torch.Generator``; :func:`apply_geometry` / :func:`apply_intensity` (:func:`apply_bias_field`
then :func:`apply_gamma`) / :func:`apply_params` apply them. The same parameters go to the
image and its labels, and a run can be replayed exactly.

Conventions: pixel ``(row, col) = (y, x)``; the affine map acts about the image centre
``((W - 1) / 2, (H - 1) / 2)``; a positive shift moves the content right / down; a scale above 1
enlarges the content (a mask's area is multiplied by ``scale ** 2``); shear is parallel to the
x axis (``x' = x + tan(shear) * y``). Sampling uses ``align_corners=False``. Outside the
image, label maps are padded with 0 (background) and images with their border values
(``padding_mode="border"``; z-scored scans have a negative background, which zero padding
would turn into a bright frame); pass ``image_padding="zeros"`` to pad images with 0 instead.
Items whose parameters are exactly the identity are returned unchanged, bit for bit (a
resampling at the identity grid would add ~1e-5 relative interpolation noise).

Example:
    >>> import torch
    >>> from fewshotseg.transforms import AugmentConfig, sample_params, apply_params
    >>> g = torch.Generator().manual_seed(0)
    >>> images = torch.rand(2, 1, 32, 32)
    >>> labels = torch.zeros(2, 1, 32, 32, dtype=torch.long)
    >>> labels[:, :, 8:24, 8:24] = 3
    >>> params = sample_params(AugmentConfig(), 2, (32, 32), generator=g)
    >>> out_images, out_labels = apply_params(images, labels, params)
    >>> out_images.shape, out_labels.dtype
    (torch.Size([2, 1, 32, 32]), torch.int64)
    >>> sorted(out_labels.unique().tolist())
    [0, 3]
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fewshotseg._smoothing import gaussian_smooth
from fewshotseg.preprocess import check_modality

_BIAS_GRID = 4  # control points per side of the bias field: a slow variation across the image
# the recipe's bias field per intensity recipe (preprocess.INTENSITY_RECIPES): see for_modality
_BIAS_FIELD_BY_MODALITY = {"mri": 0.5, "ct": 0.0, "none": 0.0}

__all__ = [
    "AugmentConfig",
    "TransformParams",
    "apply_bias_field",
    "apply_gamma",
    "apply_geometry",
    "apply_intensity",
    "apply_params",
    "gaussian_smooth",
    "sample_params",
    "sampling_grid",
]


def _as_range(name: str, value: tuple[float, float] | list[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"AugmentConfig.{name} must be a (low, high) pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"AugmentConfig.{name} must be a finite (low, high) with low <= high, "
                         f"got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the random paired transform; the defaults are the reference's.

    Every part can be switched off: ``rotation=0``, ``shift=0``, ``shear=0``,
    ``scale=(1, 1)``, ``elastic_alpha=0``, ``gamma=(1, 1)``, ``bias_field=0`` (the default: the
    reference has no bias field). :meth:`none` switches off all.
    Lengths are in pixels of the image the transform is applied to (the episode size).

    Attributes:
        rotation: maximum rotation in degrees; the angle is uniform in ``[-rotation, rotation]``.
        shift: maximum translation in pixels, drawn independently for x and y, uniform in
            ``[-shift, shift]``.
        shear: maximum shear angle in degrees (shear parallel to the x axis), uniform in
            ``[-shear, shear]``.
        scale: ``(low, high)`` of the isotropic scale factor, uniform; > 1 enlarges the content.
        elastic_alpha: magnitude of the elastic displacement in pixels (0 switches it off).
        elastic_sigma: smoothness of the elastic displacement: the standard deviation, in
            pixels, of the Gaussian that smooths the per-pixel uniform noise.
        gamma: ``(low, high)`` of the gamma exponent, uniform; applied to the image min-max
            rescaled to [0, 1] and mapped back. Values must be positive.
        bias_field: largest log-gain of a smooth multiplicative field (0 switches it off). The
            log-gain at each point of a ``4 x 4`` grid spread over the image is uniform in
            ``[-bias_field, bias_field]`` and interpolated bicubically in between, so the
            gain varies slowly across the image (0.5: gains of about 0.61 to 1.65, the
            brightness changes across a body that MRI receive coils make).

    Example:
        >>> AugmentConfig().scale
        (0.9, 1.2)
        >>> AugmentConfig.none().is_identity
        True
    """

    rotation: float = 5.0
    shift: float = 5.0
    shear: float = 5.0
    scale: tuple[float, float] = (0.9, 1.2)
    elastic_alpha: float = 10.0
    elastic_sigma: float = 5.0
    gamma: tuple[float, float] = (0.5, 1.5)
    bias_field: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotation", "shift", "shear", "elastic_alpha", "bias_field"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"AugmentConfig.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"AugmentConfig.{name} must be finite and >= 0 (it is the "
                                 f"half-width of a symmetric range), got {value!r}")
        if self.shear >= 90:
            raise ValueError(f"AugmentConfig.shear must be below 90 degrees, got {self.shear!r}")
        if not (isinstance(self.elastic_sigma, (int, float)) and self.elastic_sigma > 0
                and math.isfinite(self.elastic_sigma)):
            raise ValueError("AugmentConfig.elastic_sigma must be a positive number of pixels, "
                             f"got {self.elastic_sigma!r}")
        scale = _as_range("scale", self.scale)
        gamma = _as_range("gamma", self.gamma)
        if scale[0] <= 0:
            raise ValueError(f"AugmentConfig.scale must be positive, got {self.scale!r}")
        if gamma[0] <= 0:
            raise ValueError(f"AugmentConfig.gamma must be positive, got {self.gamma!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "gamma", gamma)

    @classmethod
    def none(cls) -> AugmentConfig:
        """A configuration that leaves every image and label map unchanged.

        Example:
            >>> AugmentConfig.none().rotation, AugmentConfig.none().scale
            (0.0, (1.0, 1.0))
        """
        return cls(rotation=0.0, shift=0.0, shear=0.0, scale=(1.0, 1.0), elastic_alpha=0.0,
                   gamma=(1.0, 1.0))

    @classmethod
    def for_modality(cls, modality: str) -> AugmentConfig:
        """The training recipe's transform for scans of a modality (``fewshotseg train``).

        The reference's transform, plus a bias field of 0.5 on MRI: receive coils shade MRI
        smoothly and differently from scan to scan, and a support shaded unlike its query (CHAOS
        patient 36) is matched poorly unless training showed such pairs (docs/results.md,
        "Intensity augmentation"; 0.5 rather than 0.3 since "Bias field strength"). CT numbers
        are calibrated (Hounsfield units, no coil shading) and ``"none"`` (intensities the user
        normalised, of unknown origin) keep the reference.

        Example:
            >>> [AugmentConfig.for_modality(m).bias_field for m in ("mri", "ct", "none")]
            [0.5, 0.0, 0.0]
        """
        return cls(bias_field=_BIAS_FIELD_BY_MODALITY[check_modality(modality)])

    @property
    def is_identity(self) -> bool:
        """True when every sampled transform is the identity.

        Example:
            >>> AugmentConfig().is_identity, AugmentConfig.none().is_identity
            (False, True)
        """
        return (self.rotation == 0 and self.shift == 0 and self.shear == 0
                and self.scale == (1.0, 1.0) and self.elastic_alpha == 0
                and self.gamma == (1.0, 1.0) and self.bias_field == 0)


@dataclass
class TransformParams:
    """Sampled parameters of a batch of paired transforms (one row per item).

    Attributes:
        rotation: ``(B,)`` float, degrees; positive turns the content from +x towards +y
            (clockwise on screen, with y pointing down).
        shear: ``(B,)`` float, degrees, shear parallel to the x axis.
        scale: ``(B,)`` float, isotropic scale (> 1 enlarges the content).
        shift: ``(B, 2)`` float, ``(dx, dy)`` in pixels (content moves right / down).
        gamma: ``(B,)`` float, gamma exponent (1 = unchanged).
        displacement: ``(B, 2, H, W)`` float elastic displacement ``(dx, dy)`` in pixels, or
            ``None`` for no elastic warp. The output pixel ``p`` reads the affinely
            transformed image at ``p + displacement[:, :, p]``.
        bias_field: ``(B, 4, 4)`` float log-gains at the control points of the multiplicative
            intensity field (:func:`apply_bias_field`), or ``None`` for none.

    Example:
        >>> p = TransformParams.identity(3)
        >>> p.batch_size, bool(p.is_identity().all())
        (3, True)
    """

    rotation: Tensor
    shear: Tensor
    scale: Tensor
    shift: Tensor
    gamma: Tensor
    displacement: Tensor | None = None
    bias_field: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of items B."""
        return int(self.rotation.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.rotation.device

    @classmethod
    def identity(cls, batch_size: int, *, size: tuple[int, int] | None = None,
                 device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> TransformParams:
        """Parameters that leave ``batch_size`` items unchanged.

        Args:
            batch_size: number of items B.
            size: ``(H, W)``; when given, an all-zero displacement field is included.
            device: where the tensors live (CPU by default).
            dtype: floating dtype of the tensors.

        Example:
            >>> p = TransformParams.identity(2, size=(4, 6))
            >>> tuple(p.displacement.shape), p.scale.tolist(), p.shift.dtype
            ((2, 2, 4, 6), [1.0, 1.0], torch.float32)
        """
        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, device=device, dtype=dtype)

        disp = None if size is None else zeros(batch_size, 2, *size)
        return cls(rotation=zeros(batch_size), shear=zeros(batch_size),
                   scale=zeros(batch_size) + 1, shift=zeros(batch_size, 2),
                   gamma=zeros(batch_size) + 1, displacement=disp)

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> TransformParams:
        """A copy on ``device`` (and in ``dtype`` when given).

        Example:
            >>> TransformParams.identity(2).to("cpu", torch.float64).gamma.dtype
            torch.float64
        """
        moved = {f.name: (None if getattr(self, f.name) is None
                          else getattr(self, f.name).to(device=device, dtype=dtype))
                 for f in fields(self)}
        return TransformParams(**moved)  # type: ignore[arg-type]

    def select(self, index: Tensor | slice | int | list[int]) -> TransformParams:
        """The parameters of a subset of the items (``index`` as for tensor indexing).

        Example:
            >>> p = TransformParams.identity(4)
            >>> p.select(torch.tensor([True, False, True, True])).batch_size, p.select(1).batch_size
            (3, 1)
        """
        if isinstance(index, int):
            index = [index]
        picked = {f.name: (None if getattr(self, f.name) is None
                           else getattr(self, f.name)[index]) for f in fields(self)}
        return TransformParams(**picked)  # type: ignore[arg-type]

    def replace_items(self, mask: Tensor, other: TransformParams) -> TransformParams:
        """Parameters where the items selected by the ``(B,)`` bool ``mask`` come from ``other``.

        ``other`` holds exactly ``mask.sum()`` items, in order. Used to redraw the
        transform of a few items of a batch.

        Example:
            >>> p, q = TransformParams.identity(3), TransformParams.identity(1)
            >>> q.rotation += 5.0
            >>> p.replace_items(torch.tensor([False, True, False]), q).rotation.tolist()
            [0.0, 5.0, 0.0]
        """
        mask = mask.to(self.device)
        if int(mask.sum()) != other.batch_size:
            raise ValueError(f"replace_items: mask selects {int(mask.sum())} items but `other` "
                             f"has {other.batch_size}")
        out: dict[str, Tensor | None] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is None and theirs is None:
                out[f.name] = None
                continue
            if mine is None or theirs is None:  # one side has no field: zeros are the identity
                ref = mine if mine is not None else theirs
                shape = (self.batch_size if mine is None else other.batch_size, *ref.shape[1:])
                zeros = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
                mine, theirs = (zeros, theirs) if mine is None else (mine, zeros)
            merged = mine.clone()
            merged[mask] = theirs.to(merged.device, merged.dtype)
            out[f.name] = merged
        return TransformParams(**out)  # type: ignore[arg-type]

    def is_identity(self) -> Tensor:
        """``(B,)`` bool: items whose geometry is exactly the identity (gamma not included).

        Example:
            >>> p = TransformParams.identity(2); p.shift[1, 0] = 1.0; p.gamma[0] = 2.0
            >>> p.is_identity().tolist()
            [True, False]
        """
        ident = ((self.rotation == 0) & (self.shear == 0) & (self.scale == 1)
                 & (self.shift == 0).all(dim=1))
        if self.displacement is not None and bool(ident.any()):  # only look at candidates
            ident[ident.clone()] = (self.displacement[ident] == 0).flatten(1).all(dim=1)
        return ident

    def affine_theta(self, size: tuple[int, int]) -> Tensor:
        """``(B, 2, 3)`` matrices for ``F.affine_grid(..., align_corners=False)``.

        They map normalised output coordinates to normalised input coordinates: the inverse
        of the forward map ``p -> c + t + s R(rotation) Sh(shear) (p - c)`` in pixels. float64.

        Example:
            >>> p = TransformParams.identity(1); p.scale[0] = 2.0  # enlarge: read half as far
            >>> (p.affine_theta((8, 8))[0] + 0.0).tolist()  # + 0.0: no negative zeros
            [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]
        """
        h, w = size
        rot = torch.deg2rad(self.rotation.double())
        tan_sh = torch.tan(torch.deg2rad(self.shear.double()))
        scale = self.scale.double()
        cos, sin = torch.cos(rot), torch.sin(rot)
        # forward linear part L = s * R @ Sh, Sh = [[1, tan], [0, 1]]
        l00, l01 = scale * cos, scale * (cos * tan_sh - sin)
        l10, l11 = scale * sin, scale * (sin * tan_sh + cos)
        det = l00 * l11 - l01 * l10
        i00, i01, i10, i11 = l11 / det, -l01 / det, -l10 / det, l00 / det
        # in normalised coordinates x_n = (x - c_x) * 2 / W: A = N L^-1 N^-1
        a00, a01 = i00, i01 * h / w
        a10, a11 = i10 * w / h, i11
        tx = self.shift[:, 0].double() * 2 / w
        ty = self.shift[:, 1].double() * 2 / h
        theta = torch.stack([
            torch.stack([a00, a01, -(a00 * tx + a01 * ty)], dim=1),
            torch.stack([a10, a11, -(a10 * tx + a11 * ty)], dim=1),
        ], dim=1)
        return theta


def _uniform(n: int | tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None,
             gen_device: torch.device, dtype: torch.dtype) -> Tensor:
    shape = (n,) if isinstance(n, int) else n
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype)
    return lo + (hi - lo) * u


def sample_params(config: AugmentConfig, batch_size: int, size: tuple[int, int], *,
                  generator: torch.Generator | None = None,
                  device: str | torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> TransformParams:
    """Draw the parameters of ``batch_size`` independent random transforms.

    Random numbers are drawn on the generator's device (CPU for a default
    ``torch.Generator()``), in a fixed order (rotation, shear, scale, shift, gamma, the
    elastic noise, then the bias field's log-gains), and moved to ``device``; the elastic
    noise is smoothed there. So a CPU generator with a given seed gives the same parameters
    whatever ``device`` is, switching the elastic warp off leaves the other parameters
    unchanged, and switching the bias field on leaves all the others unchanged.

    Args:
        config: ranges of the transform.
        batch_size: number of items B.
        size: ``(H, W)`` of the images the parameters will be applied to.
        generator: source of randomness. ``None`` uses torch's global generator (not
            reproducible; pass one).
        device: where the returned tensors live (default: the generator's device, else CPU).
        dtype: floating dtype of the returned tensors.

    Returns:
        A :class:`TransformParams` with B rows (``displacement`` is ``None`` when
        ``config.elastic_alpha == 0``, ``bias_field`` when ``config.bias_field == 0``).

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> p = sample_params(AugmentConfig(), 4, (64, 64), generator=g)
        >>> tuple(p.displacement.shape), bool((p.scale >= 0.9).all() and (p.scale <= 1.2).all())
        ((4, 2, 64, 64), True)
    """
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative int, got {batch_size!r}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be a positive (H, W), got {size!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    out_device = torch.device(device) if device is not None else gen_device
    b = batch_size
    rotation = _uniform(b, -config.rotation, config.rotation, generator, gen_device, dtype)
    shear = _uniform(b, -config.shear, config.shear, generator, gen_device, dtype)
    scale = _uniform(b, config.scale[0], config.scale[1], generator, gen_device, dtype)
    shift = _uniform((b, 2), -config.shift, config.shift, generator, gen_device, dtype)
    gamma = _uniform(b, config.gamma[0], config.gamma[1], generator, gen_device, dtype)
    displacement = None
    if config.elastic_alpha > 0:
        noise = _uniform((b, 2, h, w), -1.0, 1.0, generator, gen_device, dtype).to(out_device)
        displacement = gaussian_smooth(noise, config.elastic_sigma) * config.elastic_alpha
    bias = None
    if config.bias_field > 0:
        bias = _uniform((b, _BIAS_GRID, _BIAS_GRID), -config.bias_field, config.bias_field,
                        generator, gen_device, dtype)
    params = TransformParams(rotation=rotation, shear=shear, scale=scale, shift=shift,
                             gamma=gamma, displacement=displacement, bias_field=bias)
    return params.to(out_device)


def _check_batch(name: str, x: Tensor, batch_size: int | None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(x.shape)}; add the "
                         "missing batch/channel axes with x[None] or x[:, None]")
    if batch_size is not None and x.shape[0] != batch_size:
        raise ValueError(f"{name} has {x.shape[0]} items but the parameters have {batch_size}")


@functools.lru_cache(maxsize=16)
def _base_coords(h: int, w: int, dtype: torch.dtype, device: str) -> Tensor:
    """``(2, H * W)`` normalised pixel-centre coordinates (x, y), ``align_corners=False``."""
    xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
    return torch.stack([xs.repeat(h), ys.repeat_interleave(w)]).to(device=device, dtype=dtype)


def sampling_grid(params: TransformParams, size: tuple[int, int]) -> Tensor:
    """``(B, H, W, 2)`` normalised sampling grid (``align_corners=False``) of the transforms.

    Output pixel ``p`` samples the input at ``A^-1 (p + d(p))``: the elastic displacement
    ``d`` is added in output space, then the inverse affine map is applied, which is exactly
    the affine warp followed by the elastic warp (the reference's order), in one resampling.

    Args:
        params: B items of `TransformParams` (a ``displacement`` must be ``(B, 2, H, W)``).
        size: ``(H, W)`` of the images.

    Returns:
        ``(B, H, W, 2)`` grid in the dtype of ``params.scale``, ``(x, y)`` in [-1, 1] inside
        the image, as ``F.grid_sample`` takes it.

    Example:
        >>> grid = sampling_grid(TransformParams.identity(1), (2, 4))
        >>> tuple(grid.shape), grid[0, 0, :, 0].tolist()   # pixel-centre x coordinates
        ((1, 2, 4, 2), [-0.75, -0.25, 0.25, 0.75])
    """
    h, w = (int(s) for s in size)
    b = params.batch_size
    dtype = params.scale.dtype if params.scale.dtype.is_floating_point else torch.float32
    theta = params.affine_theta((h, w)).to(dtype)
    base = _base_coords(h, w, dtype, str(params.device))
    if params.displacement is not None:
        disp = params.displacement
        if tuple(disp.shape[2:]) != (h, w):
            raise ValueError(f"the displacement field is {tuple(disp.shape[2:])} but the images "
                             f"are {(h, w)}; sample the parameters with size={(h, w)}")
        to_normalised = torch.tensor([[2.0 / w], [2.0 / h]], dtype=dtype, device=base.device)
        points = torch.addcmul(base, disp.reshape(b, 2, h * w).to(dtype), to_normalised)
    else:
        points = base.expand(b, 2, h * w)
    grid = torch.baddbmm(theta[:, :, 2:], theta[:, :, :2], points)   # (B, 2, H*W)
    return grid.view(b, 2, h, w).permute(0, 2, 3, 1)


def apply_geometry(images: Tensor | None, labels: Tensor | None, params: TransformParams, *,
                   image_padding: Literal["border", "zeros", "reflection"] = "border",
                   ) -> tuple[Tensor | None, Tensor | None]:
    """Warp images (bilinear) and label maps (nearest) with the same sampled geometry.

    Args:
        images: ``(B, C, H, W)`` float tensor, or ``None``.
        labels: ``(B, C', H, W)`` label maps or masks of any dtype (integer ids, bool or float
            one-hot), or ``None``. Values are never mixed: the output holds only values of the
            input and 0 (padding outside the image).
        params: B items of :class:`TransformParams` on the same device.
        image_padding: ``grid_sample`` padding mode for the images (``"border"`` by default).

    Returns:
        ``(images, labels)`` warped, each with its input's shape, dtype and device (``None``
        stays ``None``). Items whose geometry is the identity are returned unchanged.

    Example:
        >>> lab = torch.arange(16.0).view(1, 1, 4, 4)
        >>> p = TransformParams.identity(1)
        >>> p.shift[0, 0] = 1.0                      # one pixel to the right
        >>> apply_geometry(None, lab, p)[1][0, 0, 0].tolist()
        [0.0, 0.0, 1.0, 2.0]
    """
    ref = images if images is not None else labels
    if ref is None:
        return None, None
    b = params.batch_size
    if images is not None:
        _check_batch("images", images, b)
        if not images.dtype.is_floating_point:
            raise TypeError(f"images must be a floating tensor, got {images.dtype}")
    if labels is not None:
        _check_batch("labels", labels, b)
        if images is not None and images.shape[2:] != labels.shape[2:]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} "
                             "must have the same (H, W)")
    h, w = ref.shape[2:]
    keep = params.is_identity()
    if bool(keep.all()):
        return images, labels
    grid = sampling_grid(params, (h, w))
    out_images = out_labels = None
    if images is not None:
        out_images = F.grid_sample(images, grid.to(images.dtype), mode="bilinear",
                                   padding_mode=image_padding, align_corners=False)
        if bool(keep.any()):
            out_images[keep] = images[keep]
    if labels is not None:
        work_dtype = labels.dtype
        if not work_dtype.is_floating_point:
            big = labels.numel() > 0 and int(labels.abs().max()) >= 2**24
            work_dtype = torch.float64 if big else torch.float32
        warped = F.grid_sample(labels.to(work_dtype), grid.to(work_dtype), mode="nearest",
                               padding_mode="zeros", align_corners=False)
        out_labels = warped if labels.dtype == work_dtype else warped.to(labels.dtype)
        if bool(keep.any()):
            out_labels[keep] = labels[keep]
    return out_images, out_labels


def apply_gamma(images: Tensor, gamma: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Gamma intensity transform of each item, on its min-max range.

    Each item is rescaled to [0, 1] with its own minimum and maximum (over all its values),
    raised to the power ``gamma``, and mapped back to the original range. Items with
    ``gamma == 1`` or a constant value (range <= ``eps``) are returned unchanged.

    Args:
        images: ``(B, ...)`` float tensor.
        gamma: ``(B,)`` positive exponents.
        eps: ranges at or below this are treated as constant.

    Returns:
        Tensor of the same shape, dtype and device.

    Example:
        >>> x = torch.tensor([[0.0, 1.0, 4.0]])
        >>> apply_gamma(x, torch.tensor([0.5])).tolist()
        [[0.0, 2.0, 4.0]]
    """
    if not isinstance(images, Tensor) or not images.dtype.is_floating_point:
        raise TypeError("images must be a floating torch.Tensor")
    b = images.shape[0]
    gamma = torch.as_tensor(gamma, device=images.device)
    if gamma.shape != (b,):
        raise ValueError(f"gamma must have shape ({b},), got {tuple(gamma.shape)}")
    if bool((gamma <= 0).any()):
        raise ValueError("gamma exponents must be positive")
    flat = images.reshape(b, -1)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    rng = hi - lo
    change = (gamma != 1) & (rng[:, 0] > eps)
    if not bool(change.any()):
        return images
    g = gamma.to(images.dtype)[:, None]
    unit = ((flat - lo) / rng.clamp_min(eps)).clamp_(0.0, 1.0)
    out = unit.pow(g).mul_(rng).add_(lo)
    out = torch.where(change[:, None], out, flat)
    return out.reshape(images.shape)


def apply_bias_field(images: Tensor, log_gain: Tensor | None) -> Tensor:
    """Multiply each item's intensities above its minimum by a smooth field ``exp(log_gain)``.

    The ``(B, k, k)`` control-point log-gains are interpolated bicubically (corners on the
    image corners) to ``(H, W)``. Working above the minimum keeps the background of a
    z-scored image (its minimum) where it is, as a coil's gain scales signal, not offset.
    Items whose log-gains are all 0 are returned unchanged.

    Args:
        images: ``(B, C, H, W)`` float tensor.
        log_gain: ``(B, k, k)`` float (k >= 2), or ``None`` (no field: ``images`` returned).

    Returns:
        Tensor of the same shape, dtype and device.

    Example:
        >>> x = torch.tensor([[[[-1.0, 1.0], [1.0, 1.0]]]])
        >>> y = apply_bias_field(x, torch.full((1, 4, 4), math.log(2.0)))  # gain 2 everywhere
        >>> [round(v, 4) for v in y.flatten().tolist()]
        [-1.0, 3.0, 3.0, 3.0]
    """
    if log_gain is None:
        return images
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.dtype.is_floating_point:
        raise ValueError("images must be a floating (B, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    b, _, h, w = images.shape
    if log_gain.ndim != 3 or log_gain.shape[0] != b or min(log_gain.shape[1:]) < 2:
        raise ValueError(f"log_gain must have shape ({b}, k, k) with k >= 2, got "
                         f"{tuple(log_gain.shape)}")
    change = (log_gain != 0).flatten(1).any(dim=1)
    if not bool(change.any()):
        return images
    field = F.interpolate(log_gain[:, None].to(images.device, torch.float32), size=(h, w),
                          mode="bicubic", align_corners=True).exp().to(images.dtype)
    lo = images.flatten(1).amin(dim=1)[:, None, None, None]
    out = (images - lo) * field + lo
    return torch.where(change[:, None, None, None], out, images)


def apply_intensity(images: Tensor, params: TransformParams) -> Tensor:
    """The intensity part of the transform: the bias field, then gamma, per item.

    Args:
        images: ``(B, C, H, W)`` float tensor.
        params: B items of :class:`TransformParams` (``gamma`` and ``bias_field`` are used).

    Returns:
        Tensor of the same shape, dtype and device.

    Example:
        >>> p = TransformParams.identity(1); p.gamma[0] = 2.0
        >>> apply_intensity(torch.tensor([[[[0.0, 1.0, 2.0]]]]), p).tolist()
        [[[[0.0, 0.5, 2.0]]]]
    """
    return apply_gamma(apply_bias_field(images, params.bias_field), params.gamma)


def apply_params(images: Tensor, labels: Tensor | None, params: TransformParams, *,
                 image_padding: Literal["border", "zeros", "reflection"] = "border",
                 ) -> tuple[Tensor, Tensor | None]:
    """Geometry (:func:`apply_geometry`) then intensity (:func:`apply_intensity`) on the images.

    Args:
        images: ``(B, C, H, W)`` float tensor.
        labels: ``(B, C', H, W)`` label maps (any dtype) or ``None``.
        params: B items of :class:`TransformParams`.
        image_padding: padding mode for the images.

    Returns:
        ``(images, labels)``, shapes and dtypes unchanged.

    Example:
        >>> p = TransformParams.identity(1); p.gamma[0] = 2.0   # intensity only
        >>> img, lab = apply_params(torch.tensor([[[[0.0, 1.0, 2.0]]]]), None, p)
        >>> img.tolist(), lab
        ([[[[0.0, 0.5, 2.0]]]], None)
    """
    out_images, out_labels = apply_geometry(images, labels, params, image_padding=image_padding)
    assert out_images is not None
    return apply_intensity(out_images, params), out_labels

