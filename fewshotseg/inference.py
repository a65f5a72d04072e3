"""Inference: segment query slices or volumes given a few labelled support slices.

The support set is encoded and pooled once per call (or once for many calls, with
`SupportQueryPredictor.encode_support`); query slices then stream through the backbone in
batches, and results are stitched on the CPU, so memory stays bounded for long volumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fewshotseg.encoded_support import EncodedSupport
from fewshotseg.models.alpnet import ALPNet
from fewshotseg.precision import autocast, autocast_dtype, check_amp, prefers_channels_last
from fewshotseg.preprocess import check_modality
from fewshotseg.weights import PRETRAINED, preprocessing, pretrained_path

# re-exported: PRETRAINED lives in fewshotseg.weights, EncodedSupport in fewshotseg.encoded_support
__all__ = ["PRETRAINED", "EncodedSupport", "SupportQueryPredictor"]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    if name == "SupportSet":  # renamed in 0.2 (issue 18): the name now says it is encoded
        warnings.warn(
            "fewshotseg.inference.SupportSet is deprecated and will be removed in the next "
            "release; it is now called EncodedSupport",
            DeprecationWarning,
            stacklevel=2,
        )
        return EncodedSupport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _to_tensor(x: Any, name: str) -> Tensor:
    """numpy or torch, real numeric or bool dtype -> tensor (no copy where possible)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must have a real numeric dtype, got {x.dtype}")
        if x.dtype.kind == "u" and x.dtype.itemsize > 1:
            x = x.astype(np.int64)  # torch has limited support for uint16/32/64
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must have a real numeric dtype, got {x.dtype}")
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _check_image(t: Tensor, name: str) -> Tensor:
    """A (H, W) or (N, H, W) image of finite values, as float."""
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must be a numeric image, got a boolean array")
    if t.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be one slice (H, W) or a stack of slices (N, H, W), got shape "
            f"{tuple(t.shape)}"
        )
    if min(t.shape) < 1:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf values; replace them (e.g. np.nan_to_num)")
    t = t.float()  # the network runs in float32 (autocast handles lower precision)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has values beyond the float32 range (|x| > 3.4e38); rescale it")
    return t


class SupportQueryPredictor:
    """Few-shot inference with a trained `ALPNet`, on CPU or CUDA.

    Args:
        model: the network; its train/eval mode is restored after each call.
        device: where to run (default: the model's device).
        image_size: slices are resized to ``image_size`` x ``image_size`` for the network
            (the size it was trained at) and results resized back to the query's size.
        batch_size: query slices per backbone call (4 is fastest per slice on a 2-core CPU;
            raise it on a GPU).
        amp: mixed precision, ``True``, ``False`` or ``"auto"`` (`fewshotseg.precision`):
            bf16 on CUDA where supported (else fp16) and on CPUs that run bf16 natively (the
            model's weights are then switched to channels-last memory format, which oneDNN's
            bf16 kernels need to be fast); float32 elsewhere. Probabilities are returned in
            float32.
        progress: show a tqdm bar over query batches.
        modality: the intensity recipe `segment_volume` applies to whole volumes
            (`fewshotseg.preprocess.INTENSITY_RECIPES`: ``"mri"``, ``"ct"``, ``"none"``); None
            applies none. `from_checkpoint` and `pretrained` take it from the checkpoint, so
            raw scanner intensities can be passed in. (`predict` takes slices as they are: the
            network z-scores each slice itself.)

    Example:
        >>> import numpy as np
        >>> from fewshotseg import ALPNet
        >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
        ...                                   image_size=64)
        >>> image = np.random.default_rng(0).random((80, 80)).astype(np.float32)
        >>> label = np.zeros((80, 80), np.int64); label[20:50, 30:60] = 4
        >>> predictor.predict(image, label, np.stack([image, image])).shape
        (2, 80, 80)
    """

    def __init__(
        self,
        model: ALPNet,
        *,
        device: str | torch.device | None = None,
        image_size: int = 256,
        batch_size: int = 4,
        amp: bool | Literal["auto"] = False,
        progress: bool = False,
        modality: str | None = None,
    ) -> None:
        for name, value in (("image_size", image_size), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(
                    f"{name} must be an int, got {value!r} ({type(value).__name__}); image_size "
                    "is the side the model was trained at (e.g. 256)"
                )
        if image_size < 8 or batch_size < 1:
            raise ValueError(
                f"need image_size >= 8 and batch_size >= 1, got {image_size}, {batch_size}"
            )
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.amp = check_amp(amp)
        if prefers_channels_last(autocast_dtype(self.amp, self.device), self.device):
            # bf16 convolutions on a CPU are much faster in this layout (values unchanged)
            self.model.to(memory_format=torch.channels_last)
        self.progress = progress
        check_modality(modality, allow_none=True)
        self.modality = modality

    # ------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: str | torch.device | None = None, **kwargs: Any
    ) -> SupportQueryPredictor:
        """Rebuild the model from a checkpoint's ``model_config`` and load its weights.

        Works with `Trainer` checkpoints and with the small fp16 files of `pretrained`. The
        checkpoint's preprocessing (`fewshotseg.weights.preprocessing`: its ``image_size`` and
        ``modality``, stored by `Trainer`'s ``metadata``) becomes the predictor's unless given
        in ``kwargs``.

        Args:
            path: a ``.pt`` checkpoint (e.g. ``runs/ssl/last.pt``).
            device: where to run (default: the CPU).
            **kwargs: the constructor's other arguments (``batch_size``, ``amp``, ...).

        Example:
            >>> predictor = SupportQueryPredictor.from_checkpoint(pretrained_path("chaos-ssl"))
            >>> predictor.image_size, predictor.modality
            (256, 'mri')
        """
        from fewshotseg.checkpoints import load_checkpoint, load_model_state

        ckpt = load_checkpoint(path)
        model = ALPNet.from_config(ckpt["model_config"])
        load_model_state(
            model,
            {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()},
            source=f"checkpoint {str(path)!r}",
        )
        carried = preprocessing(ckpt)
        if carried.image_size is not None:
            kwargs.setdefault("image_size", carried.image_size)
        if carried.modality is not None:
            kwargs.setdefault("modality", carried.modality)
        return cls(model.eval(), device=device or "cpu", **kwargs)

    @classmethod
    def pretrained(
        cls, name: str = "chaos-ssl", *, device: str | torch.device | None = None, **kwargs: Any
    ) -> SupportQueryPredictor:
        """A checkpoint shipped inside the package (no download), by name in
        `fewshotseg.weights.PRETRAINED`, with the preprocessing it carries (`from_checkpoint`).

        ``"chaos-ssl"``: ResNet-18 ALPNet trained self-supervised on unlabelled CHAOS T2-SPIR
        MRI (256 x 256 input, MRI intensity recipe), 5.7 MB.

        Example:
            >>> predictor = SupportQueryPredictor.pretrained("chaos-ssl")
            >>> predictor.model.model_config["backbone"], predictor.device.type
            ('resnet18', 'cpu')
        """
        return cls.from_checkpoint(pretrained_path(name), device=device, **kwargs)

    # ----------------------------------------------------------------- support
    def encode_support(self, support_img: Any, support_mask: Any) -> EncodedSupport:
        """Encode and pool a support set once, for any number of `predict` calls.

        Args:
            support_img: ``(H, W)`` or ``(K, H, W)`` image(s) (K shots), numpy or torch, any
                real dtype, intensities as `predict` gets them (slices are not preprocessed
                here; the network z-scores each one).
            support_mask: integer labels of the same shape (0 = background); every nonzero
                value is a class (N-way), all shots annotated for all classes.

        Returns:
            A `EncodedSupport`: the pooled prototypes (on the predictor's device), the label values
            in ascending order and the number of shots; pass it to `predict_with` /
            `predict_proba_with`.

        Raises:
            ValueError: shapes differ, the mask is not integer-valued or has no foreground, or a
                class vanishes when resized to ``image_size``.

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
            >>> mask = np.zeros((40, 40), np.int64); mask[5:20, 5:20] = 1; mask[25:35, 20:35] = 3
            >>> support = predictor.encode_support(image, mask)
            >>> support.label_values, support.shots
            ((1, 3), 1)
            >>> predictor.predict_with(support, np.stack([image, image])).shape
            (2, 40, 40)
        """
        img = _check_image(_to_tensor(support_img, "support_img"), "support_img")
        mask = _to_tensor(support_mask, "support_mask")
        if tuple(mask.shape) != tuple(img.shape):
            raise ValueError(
                f"support_mask shape {tuple(mask.shape)} must equal support_img shape "
                f"{tuple(img.shape)}"
            )
        if mask.is_floating_point() and (
            not torch.isfinite(mask).all() or not torch.equal(mask, mask.round())
        ):
            raise ValueError("support_mask must hold integer label values (0 = background)")
        mask = mask.long()
        if (mask < 0).any():
            raise ValueError("support_mask has negative labels; use 0 for background, >0 classes")
        if img.ndim == 2:
            img, mask = img[None], mask[None]
        values = tuple(int(v) for v in torch.unique(mask).tolist() if v != 0)
        if not values:
            raise ValueError("support_mask has no foreground: label at least one pixel (> 0)")
        onehot = torch.stack([(mask == v) for v in values], dim=1).float()  # (K, N, H, W)
        size = (self.image_size, self.image_size)
        img = self._resize(img[:, None].to(self.device), size)  # (K, 1, S, S)
        onehot = self._resize(onehot.to(self.device), size)
        present = onehot.flatten(2).amax(-1) > 0  # (K, N)
        for n, v in enumerate(values):
            if not present[:, n].any():
                raise ValueError(
                    f"class {v} vanishes when the support is resized to {size}; use a larger "
                    "image_size or a support slice where the class is bigger"
                )
        with self._eval_mode(), torch.inference_mode(), self._autocast():
            feats = self.model.encode(img)
            protos = self.model.prototypes(feats[None], self.model.prepare_masks(onehot[None]))
        return EncodedSupport(protos, values, img.shape[0])

    # ------------------------------------------------------- slices as features
    def encode_slices(self, images: Any) -> Tensor:
        """Backbone features of a stack of slices, in batches of ``batch_size``.

        Args:
            images: ``(D, H, W)`` image stack (numpy or torch, any real dtype).

        Returns:
            ``(D, F, h, w)`` float features on the predictor's device (the network's input is
            each slice resized to ``image_size``).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> predictor.encode_slices(np.random.rand(5, 40, 40)).shape  # h = w = 32 / 8
            torch.Size([5, 8, 4, 4])
        """
        stack = _check_image(_to_tensor(images, "images"), "images")
        if stack.ndim != 3:
            raise ValueError(f"images must be a (D, H, W) stack, got shape {tuple(stack.shape)}")
        starts = range(0, stack.shape[0], self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        with self._eval_mode(), torch.inference_mode(), self._autocast():
            feats = [self._encode_batch(stack[i : i + self.batch_size]).float() for i in starts]
        return torch.cat(feats)

    def support_from_features(
        self, features: Tensor, masks: Any, label_values: Sequence[int]
    ) -> EncodedSupport:
        """An `EncodedSupport` from already encoded support slices (no second backbone pass).

        Args:
            features: ``(K, F, h, w)`` features of the support slices (`encode_slices`), or
                ``(G, K, F, h, w)`` for G support sets of K shots each, pooled in one call.
            masks: ``(K, N, H, W)`` (or ``(G, K, N, H, W)``) one-hot foreground masks of those
                slices at any resolution (resized to ``image_size``), channel n for
                ``label_values[n]``.
            label_values: the label value of each mask channel.

        Returns:
            An `EncodedSupport` of batch 1 (or G: `EncodedSupport.select` picks one per query
            slice).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> images = np.random.rand(2, 40, 40)
            >>> masks = np.zeros((2, 1, 40, 40), np.float32); masks[:, 0, 10:30, 10:30] = 1
            >>> support = predictor.support_from_features(predictor.encode_slices(images),
            ...                                           masks, (5,))
            >>> support.shots, support.label_values
            (2, (5,))
        """
        onehot = _to_tensor(masks, "masks").float().to(self.device)
        batched = features.ndim == 5
        if not batched:
            features, onehot = features[None], onehot[None]
        size = (self.image_size, self.image_size)
        g, k = onehot.shape[:2]
        onehot = self._resize(onehot.flatten(0, 1), size).unflatten(0, (g, k))
        with self._eval_mode(), torch.inference_mode(), self._autocast():
            protos = self.model.prototypes(features, self.model.prepare_masks(onehot))
        return EncodedSupport(protos, tuple(int(v) for v in label_values), features.shape[1])

    def probabilities(
        self, features: Tensor, support: EncodedSupport, out_size: tuple[int, int]
    ) -> Tensor:
        """Class probabilities ``(d, N + 1, *out_size)`` (float32, on the predictor's device)
        of encoded query slices ``(d, F, h, w)`` against a support of batch 1 (every slice) or
        of batch d (slice i against support set i).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> mask = np.zeros((40, 40), np.int64); mask[10:30, 10:30] = 1
            >>> support = predictor.encode_support(np.random.rand(40, 40), mask)
            >>> feats = predictor.encode_slices(np.random.rand(3, 40, 40))
            >>> proba = predictor.probabilities(feats, support, (40, 40))
            >>> proba.shape, bool(torch.allclose(proba.sum(1), torch.ones(3, 40, 40)))
            (torch.Size([3, 2, 40, 40]), True)
        """
        with self._eval_mode(), torch.inference_mode(), self._autocast():
            return self._probabilities(features, support, out_size)

    # ------------------------------------------------------------------ queries
    def predict_proba(self, support_img: Any, support_mask: Any, query: Any) -> Any:
        """Class probabilities ``(N + 1, H, W)`` or ``(N + 1, D, H, W)`` for the query.

        Channel 0 is background, channel n + 1 the n-th smallest support label value; the
        channels sum to 1 at every pixel. Numpy in, numpy out (float32); torch in, torch out
        (float32) on the query's device.

        Args:
            support_img: ``(H_s, W_s)`` support slice or ``(K, H_s, W_s)`` shots, any real dtype.
            support_mask: integer labels of the support's shape (0 = background).
            query: ``(H, W)`` slice or ``(D, H, W)`` stack, any real dtype; its size may differ
                from the support's (both are resized to ``image_size`` for the network and the
                output is resized back to the query's).

        Returns:
            ``(N + 1, H, W)`` for a slice, ``(N + 1, D, H, W)`` for a stack, float32.

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
            >>> mask = np.zeros((40, 40), np.int64); mask[5:20, 5:20] = 2
            >>> proba = predictor.predict_proba(image, mask, np.stack([image] * 3))
            >>> proba.shape, proba.dtype, bool(np.allclose(proba.sum(0), 1, atol=1e-5))
            ((2, 3, 40, 40), dtype('float32'), True)
        """
        support = self.encode_support(support_img, support_mask)
        return self.predict_proba_with(support, query)

    def predict(self, support_img: Any, support_mask: Any, query: Any) -> Any:
        """Label map with the query's shape, using the support's label values (int64).

        Equals the argmax of `predict_proba`, mapped to the label values. Slices go in as they
        are (for whole raw volumes, `segment_volume` applies the intensity recipe and chooses
        the slices).

        Args:
            support_img: ``(H_s, W_s)`` support slice or ``(K, H_s, W_s)`` shots, any real dtype.
            support_mask: integer labels of the support's shape (0 = background); each nonzero
                value is a class.
            query: ``(H, W)`` slice or ``(D, H, W)`` stack, any real dtype and in-plane size.

        Returns:
            int64 labels with the query's shape: 0 or one of the support's label values. Numpy
            in, numpy out; torch in, torch out on the query's device.

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
            >>> mask = np.zeros((40, 40), np.int64); mask[5:20, 5:20] = 4
            >>> labels = predictor.predict(image, mask, image)
            >>> labels.shape, labels.dtype, set(np.unique(labels).tolist()) <= {0, 4}
            ((40, 40), dtype('int64'), True)
        """
        support = self.encode_support(support_img, support_mask)
        return self.predict_with(support, query)

    def predict_proba_with(self, support: EncodedSupport, query: Any) -> Any:
        """`predict_proba` with an already encoded support set (`encode_support`): the support
        is pooled once for any number of queries.

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> mask = np.zeros((40, 40), np.int64); mask[10:30, 10:30] = 2
            >>> support = predictor.encode_support(np.random.rand(40, 40), mask)
            >>> predictor.predict_proba_with(support, np.random.rand(3, 40, 40)).shape
            (2, 3, 40, 40)
        """
        q, as_numpy, out_device, squeeze = self._query(query)
        probs = torch.cat(list(self._stream(support, q)), dim=1)  # (N + 1, D, H, W) on CPU
        probs = probs[:, 0] if squeeze else probs
        return probs.numpy() if as_numpy else probs.to(out_device)

    def predict_with(self, support: EncodedSupport, query: Any) -> Any:
        """`predict` with an already encoded support set (`encode_support`).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> mask = np.zeros((40, 40), np.int64); mask[10:30, 10:30] = 2
            >>> support = predictor.encode_support(np.random.rand(40, 40), mask)
            >>> labels = predictor.predict_with(support, np.random.rand(3, 40, 40))
            >>> labels.shape, labels.dtype, set(np.unique(labels)) <= {0, 2}
            ((3, 40, 40), dtype('int64'), True)
        """
        q, as_numpy, out_device, squeeze = self._query(query)
        lut = torch.tensor((0, *support.label_values), dtype=torch.long)
        labels = torch.cat([lut[p.argmax(0)] for p in self._stream(support, q)], dim=0)
        labels = labels[0] if squeeze else labels
        return labels.numpy() if as_numpy else labels.to(out_device)

    # ----------------------------------------------------------------- helpers
    def _query(self, query: Any) -> tuple[Tensor, bool, torch.device, bool]:
        as_numpy = not isinstance(query, Tensor)
        t = _to_tensor(query, "query")
        out_device = t.device if isinstance(query, Tensor) else torch.device("cpu")
        t = _check_image(t, "query")
        squeeze = t.ndim == 2
        return (t[None] if squeeze else t), as_numpy, out_device, squeeze

    def _stream(self, support: EncodedSupport, query: Tensor) -> Iterator[Tensor]:
        """Probabilities ``(N + 1, d, H, W)`` on the CPU, one query batch at a time."""
        depth, h, w = query.shape
        starts = range(0, depth, self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="segmenting", unit="batch")
        with self._eval_mode(), torch.inference_mode(), self._autocast():
            for start in starts:
                feats = self._encode_batch(query[start : start + self.batch_size])
                yield self._probabilities(feats, support, (h, w)).transpose(0, 1).cpu()

    def _encode_batch(self, slices: Tensor) -> Tensor:
        """Features of ``(d, H, W)`` query slices, resized to the network's input size."""
        size = (self.image_size, self.image_size)
        return self.model.encode(self._resize(slices.to(self.device)[:, None], size))

    def _probabilities(
        self, feats: Tensor, support: EncodedSupport, out_size: tuple[int, int]
    ) -> Tensor:
        """Class probabilities ``(d, N + 1, *out_size)`` of query features against a support."""
        size = (self.image_size, self.image_size)
        protos = support.prototypes
        if protos.features.shape[0] == 1:
            protos = protos.expand(feats.shape[0])
        elif protos.features.shape[0] != feats.shape[0]:
            raise ValueError(
                f"a support of batch {protos.features.shape[0]} needs as many query slices, "
                f"got {feats.shape[0]}"
            )
        logits = self.model.segment(feats, protos, size).float()
        if out_size != size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits.softmax(1)

    @staticmethod
    def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(autocast_dtype(self.amp, self.device), self.device)

    # ------------------------------------------------------------------ volumes
    def segment_volume(
        self,
        support_volume: Any,
        support_labels: Any,
        query_volume: Any,
        *,
        classes: Sequence[int] | None = None,
        config: Any = None,
    ) -> np.ndarray:
        """Segment a whole query volume from a labelled support volume (no query labels used).

        The user's main call: applies the model's intensity recipe (``modality``) to both
        volumes, aligns the query's slices with the support's by anatomy, segments each class
        only in the query slices aligned with the class's extent in the support (each with the
        3 nearest support slices of the class), keeps voxels above 0.6 probability and each
        class's largest 3D component. `fewshotseg.volume` has the steps and
        `fewshotseg.volume.VolumeConfig` their switches. The shipped model on held-out CHAOS
        patients: 76.3 mean Dice over whole volumes (docs/results.md).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> volume = np.random.default_rng(0).random((8, 40, 40)).astype(np.float32)
            >>> labels = np.zeros((8, 40, 40), np.int64); labels[2:6, 10:30, 10:30] = 1
            >>> out = predictor.segment_volume(volume, labels, volume[1:])
            >>> out.shape, out.dtype
            ((7, 40, 40), dtype('int64'))

        Several labelled support scans (lists of volumes and of their labels) vote on where
        each class lies in the query and average their probabilities: one scan's unusual
        anatomy then matters far less (docs/results.md).

        Args:
            support_volume: ``(D_s, H, W)`` image, raw intensities or preprocessed; or a list
                of such volumes.
            support_labels: ``(D_s, H, W)`` integer labels of the support volume; or a list,
                one per support volume.
            query_volume: ``(D, H', W')`` image; no labels.
            classes: label values to segment (default: every nonzero support label).
            config: a `fewshotseg.volume.VolumeConfig` (default: the measured best).

        Returns:
            ``(D, H', W')`` int64 numpy label map (support label values, 0 elsewhere).
        """
        from fewshotseg.volume import segment_volume

        return segment_volume(
            self, support_volume, support_labels, query_volume, classes=classes, config=config
        )

    def encode_support_volume(
        self, support_volume: Any, support_labels: Any, *, classes: Sequence[int] | None = None
    ) -> Any:
        """Prepare a labelled support volume once for many `segment_volume_with` calls.

        Checks the volume and labels and applies the intensity recipe now; each support slice
        is encoded the first time a query needs it and kept, so the second and later queries
        skip that work (`fewshotseg.volume.VolumeSupport`).

        Args:
            support_volume: ``(D_s, H, W)`` image (numpy or torch), raw intensities or
                preprocessed.
            support_labels: ``(D_s, H, W)`` integer labels (0 background).
            classes: label values to segment (default: every nonzero support label).

        Returns:
            A `fewshotseg.volume.VolumeSupport` tied to this predictor.

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> volume = np.random.default_rng(0).random((8, 40, 40)).astype(np.float32)
            >>> labels = np.zeros((8, 40, 40), np.int64); labels[2:6, 10:30, 10:30] = 1
            >>> support = predictor.encode_support_volume(volume, labels)
            >>> [predictor.segment_volume_with(support, q).shape for q in (volume, volume[:5])]
            [(8, 40, 40), (5, 40, 40)]
        """
        from fewshotseg.volume import prepare_support

        return prepare_support(self, support_volume, support_labels, classes=classes)

    def segment_volume_with(self, support: Any, query_volume: Any, *, config: Any = None) -> Any:
        """`segment_volume` with a support from `encode_support_volume`.

        Args:
            support: a `fewshotseg.volume.VolumeSupport` prepared by this predictor, or a list
                of them (several support scans, see `segment_volume`).
            query_volume: ``(D, H', W')`` image; no labels.
            config: a `fewshotseg.volume.VolumeConfig` (default: the measured best).

        Returns:
            ``(D, H', W')`` int64 numpy label map (``support.classes`` values, 0 elsewhere).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> volume = np.random.default_rng(0).random((8, 40, 40)).astype(np.float32)
            >>> labels = np.zeros((8, 40, 40), np.int64); labels[2:6, 10:30, 10:30] = 1
            >>> support = predictor.encode_support_volume(volume, labels)
            >>> predictor.segment_volume_with(support, volume[2:]).shape
            (6, 40, 40)
        """
        from fewshotseg.volume import segment_with

        return segment_with(self, support, query_volume, config=config)
