"""Images in and out of the network: decode/encode, the letterbox that fits an image to the input, one resampler.

Pure code (no Lightning), used by every dataset that reads pictures (``datamodules/images.py``, ``real_images.py``,
``mupots.py``, ``h36m.py``, ``threedpw.py``, ``muco.py``), by ``predict.py`` and by ``evaluation.py``.

Convention
----------
- Pixels are continuous coordinates (u, v) as in ``geometry/camera.py``: an image spans [0, W] x [0, H].
- ``Letterbox(scale, offset_x, offset_y)`` is defined in one direction, original image -> network input:
  ``input_px = scale * original_px + offset``. ``to_input`` applies it and ``to_original`` its inverse, to points
  and to ``geometry.Intrinsics``. It is the ``letterbox`` (..., 3) tensor of every fitted sample and batch, the
  ``letterbox`` argument of ``geometry.camera.to_real_camera`` / ``from_real_camera``, and the map
  ``crops.PersonCrops.mapping`` gives a person crop.
- ``fit_image`` brings an image to ``size`` x ``size``: ``mode="crop"`` scales the shorter side to ``size`` and
  centre-crops, ``mode="pad"`` scales the longer side to ``size`` and centres it on zeros. One scale factor for both
  axes (bilinear, antialiased), whole-pixel offsets, so the recorded letterbox is exactly where the pixels went.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from lightning_mp3d.geometry.camera import Intrinsics

MAX_ASPECT_RATIO = 16  # longer side / shorter side that fit_image accepts
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb warning limit; larger images are refused
FIT_MODES = ("crop", "pad")

Number = float | torch.Tensor


# ----------------------------------------------------------------------------------------------------------------
# codec


def decode_image(data: bytes, name: str) -> torch.Tensor:
    """JPEG/PNG bytes -> (3, H, W) float RGB in [0, 1], upright (the EXIF orientation applied).

    16-bit grayscale is scaled by its bit depth. A ValueError naming ``name`` if unreadable or over
    ``MAX_IMAGE_PIXELS``.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"{im.width}x{im.height} pixels is over the limit of {MAX_IMAGE_PIXELS} (a decompression bomb?)"
                )
            array = _rgb_unit(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {name}: {err}") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _rgb_unit(im: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; integer grayscale deeper than 8 bit ("I;16", "I") divided by 65535, not clipped."""
    if im.mode.startswith("I"):
        gray = np.asarray(im, dtype=np.float32) / 65535.0  # PNG's deepest grayscale is 16 bit; Pillow reads it as I
        return np.repeat(gray.clip(0.0, 1.0)[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def encode_image(image: torch.Tensor, image_format: str = "png", quality: int = 95) -> bytes:
    """(3, H, W) float in [0, 1] -> PNG or JPEG bytes (8 bit)."""
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    array = (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(array).save(buf, format="PNG")
    else:
        Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# letterbox


class Letterbox(NamedTuple):
    """Original image -> network input: ``input_px = scale * original_px + offset``.

    Fields are floats (one image) or tensors of one leading shape L (a batch: ``Letterbox.from_tensor(batch[
    "letterbox"])``); points (*L, ..., 2) take their own image's letterbox.

    Attributes:
        scale: input px per original px.
        offset_x, offset_y: input px of the original image's origin.
    """

    scale: Number
    offset_x: Number
    offset_y: Number

    @classmethod
    def from_tensor(cls, params: torch.Tensor) -> Letterbox:
        """(*L, 3) ``(scale, offset_x, offset_y)`` -> a Letterbox of (*L) tensors."""
        if params.shape[-1:] != (3,):
            raise ValueError(f"letterbox must be (..., 3) (scale, offset_x, offset_y), got {tuple(params.shape)}")
        return cls(params[..., 0], params[..., 1], params[..., 2])

    def as_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(*L, 3) ``(scale, offset_x, offset_y)``: the ``letterbox`` entry of samples and batches."""
        if isinstance(self.scale, torch.Tensor):
            return torch.stack(torch.broadcast_tensors(*self), -1).to(dtype)
        return torch.tensor(tuple(self), dtype=dtype)

    def _params(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale (*L, 1.., 1) and offset (*L, 1.., 2), shaped to broadcast over points (*L, ..., 2)."""
        if points.shape[-1:] != (2,):
            raise ValueError(f"points must be (..., 2) pixels (u, v), got {tuple(points.shape)}")
        scale, ox, oy = (torch.as_tensor(x, dtype=points.dtype, device=points.device) for x in self)
        lead = scale.dim()
        if points.dim() < lead + 1 or points.shape[:lead] != scale.shape:
            raise ValueError(f"points {tuple(points.shape)} must start with the letterbox's shape {tuple(scale.shape)}")
        ones = (1,) * (points.dim() - 1 - lead)
        return scale.reshape(*scale.shape, *ones, 1), torch.stack((ox, oy), -1).reshape(*scale.shape, *ones, 2)

    def to_input(self, points: torch.Tensor) -> torch.Tensor:
        """Original-image pixels (*L, ..., 2) -> input pixels."""
        scale, offset = self._params(points)
        return points * scale + offset

    def to_original(self, points: torch.Tensor) -> torch.Tensor:
        """Input pixels (*L, ..., 2) -> original-image pixels (the inverse of ``to_input``)."""
        scale, offset = self._params(points)
        return (points - offset) / scale

    def intrinsics_to_input(self, camera: Intrinsics) -> Intrinsics:
        """The original image's camera as seen in the input: ``project(x, result) == to_input(project(x, camera))``."""
        s = self.scale
        return Intrinsics(camera.fx * s, camera.fy * s, camera.cx * s + self.offset_x, camera.cy * s + self.offset_y)

    def intrinsics_to_original(self, camera: Intrinsics) -> Intrinsics:
        """The input's camera in original pixels (the inverse of ``intrinsics_to_input``)."""
        s = self.scale
        return Intrinsics(
            camera.fx / s, camera.fy / s, (camera.cx - self.offset_x) / s, (camera.cy - self.offset_y) / s
        )


class _Placement(NamedTuple):
    """Where ``fit_image`` puts an image: resize by ``factor``, then the resized pixel (left, top) is input (0, 0)."""

    factor: float
    left: int
    top: int
    resized: tuple[int, int]  # (height, width) after the resize


def _placement(height: int, width: int, size: int, mode: str) -> _Placement:
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ValueError(
            f"image {width}x{height}: aspect ratio over {MAX_ASPECT_RATIO}:1 is not supported; crop it first"
        )
    side = min(height, width) if mode == "crop" else max(height, width)
    # one scale factor for both axes (not two rounded sizes): input px u is exactly original px (u + left) / factor
    factor = size / side
    if math.floor(side * factor) < size:  # the fitted side must come out at exactly `size` px, not one short
        factor = math.nextafter(factor, math.inf)
    new_h, new_w = math.floor(height * factor), math.floor(width * factor)
    return _Placement(factor, (new_w - size) // 2, (new_h - size) // 2, (new_h, new_w))  # negative when padding


def fit_letterbox(height: int, width: int, size: int = 224, mode: str = "crop") -> Letterbox:
    """The letterbox ``fit_image`` gives an image of ``height`` x ``width`` (for images stored already fitted)."""
    p = _placement(height, width, size, mode)
    return Letterbox(p.factor, float(-p.left), float(-p.top))


class FittedImage(NamedTuple):
    """An image brought to the network's input size.

    Attributes:
        image: (3, S, S) float RGB in [0, 1].
        letterbox: (3,) ``Letterbox`` (scale, offset_x, offset_y): ``input_px = scale * original_px + offset``.
        original_size: (2,) (height, width) of the original image, pixels.
    """

    image: torch.Tensor
    letterbox: torch.Tensor
    original_size: torch.Tensor


def fit_image(image: torch.Tensor, size: int = 224, mode: str = "crop") -> FittedImage:
    """Resize (bilinear, antialiased) and centre-crop or pad an image to ``size`` x ``size``.

    Args:
        image: (3, H, W) float.
        size: output side, pixels.
        mode: "crop" (shorter side to ``size``, centre crop) or "pad" (longer side to ``size``, centred, zeros).

    Returns:
        FittedImage(image (3, size, size), letterbox (3,), original_size (2,)).
    """
    _, h, w = image.shape
    p = _placement(h, w, size, mode)
    box = Letterbox(p.factor, float(-p.left), float(-p.top))
    return FittedImage(_resample(image, p, size), box.as_tensor(), torch.tensor([h, w], dtype=torch.float32))


def _resample(image: torch.Tensor, p: _Placement, size: int) -> torch.Tensor:
    """The one resampler: (3, H, W) -> (3, size, size) in [0, 1], placed as ``p`` says, zeros outside the image."""
    resized = torch.nn.functional.interpolate(
        image[None], scale_factor=p.factor, mode="bilinear", align_corners=False, antialias=True,
        recompute_scale_factor=False,
    )[0]  # fmt: skip
    new_h, new_w = resized.shape[-2:]
    out = image.new_zeros(3, size, size)
    src_t, src_l = max(p.top, 0), max(p.left, 0)
    dst_t, dst_l = max(-p.top, 0), max(-p.left, 0)
    ch, cw = min(size - dst_t, new_h - src_t), min(size - dst_l, new_w - src_l)
    out[:, dst_t : dst_t + ch, dst_l : dst_l + cw] = resized[:, src_t : src_t + ch, src_l : src_l + cw]
    return out.clamp(0, 1)


def read_fitted(path: str | Path, size: int = 224, mode: str = "crop", what: str = "") -> FittedImage:
    """An image file as the model sees it (``decode_image`` + ``fit_image``); ValueErrors name ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing {what + ' ' if what else ''}image {path}")
    return fit_image(decode_image(path.read_bytes(), str(path)), size, mode)
