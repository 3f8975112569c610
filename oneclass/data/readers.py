"""Image and mask readers behind one interface: every reader returns uint8 arrays.

Images come back as (H, W, C) uint8 with C = 1 or 3; masks as (H, W) bool. TIFFs are
read with tifffile (fast, exact for scientific TIFFs), everything else with Pillow.
Whole-slide images are opened through OpenSlide in :mod:`oneclass.data.slides`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from oneclass.errors import OneclassError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class ImageReadError(OneclassError):
    pass


def read_image(path: Path, bits: int | None = None) -> np.ndarray:
    """Read an image as (H, W, C) uint8 with C in {1, 3}; alpha is dropped. ``bits`` is
    how many of a 16-bit pixel's bits hold data (a 12-bit camera's: 12); the top 8 of
    those are kept. 8-bit images are read as they are, whatever ``bits`` says."""
    array = _read_any(path, bits=bits)
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # planar TIFF
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: unsupported image shape {array.shape}")
    if array.shape[2] == 2:  # grayscale + alpha
        array = array[:, :, :1]
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(_to_uint8(array, path, bits))


def read_mask(path: Path, shape: tuple[int, int] | None = None, threshold: int | None = None) -> np.ndarray:
    """Read a binary mask as (H, W) bool. Values must be {0, 1} or {0, 255}; a mask with
    other values (anti-aliased edges, compression noise) is refused unless ``threshold``
    is given, and then pixels at or above it are anomalous. A mask drawn only in the alpha
    channel of an image of one colour (a transparent layer) is read from its alpha."""
    array = _read_any(path, mask=True)
    if array.ndim == 3:
        if array.shape[2] in (2, 4):  # alpha: dropped, unless it alone draws the mask
            colour, alpha = array[..., :-1], array[..., -1]
            alone = (colour == colour.flat[0]).all() and not (alpha == alpha.flat[0]).all()
            array = alpha[..., None] if alone else colour
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, array.shape[2])):
            raise ImageReadError(f"{path}: mask has differing colour channels; expected a binary mask")
        array = array[..., 0]
    if array.dtype != bool:
        values = np.unique(array)
        if set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}:
            array = array > 0
        elif threshold is not None:
            array = array >= threshold
        else:
            shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            raise ImageReadError(
                f"{path}: mask values must be {{0, 1}} or {{0, 255}}, found {shown}; if the "
                f"others are edge or compression noise, set patches.mask_threshold "
                f"(--mask-threshold, e.g. 128) to count pixels at or above it as anomalous")
    if shape is not None and array.shape != tuple(shape):
        raise ImageReadError(
            f"{path}: mask size {array.shape[1]}x{array.shape[0]} does not match its image "
            f"({shape[1]}x{shape[0]})"
        )
    return array


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) without decoding the pixels."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
                planar = len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4)
                return (shape[1], shape[2]) if planar else (shape[0], shape[1])
        from PIL import Image

        with Image.open(path) as im:
            turned = _orientation(im) in (5, 6, 7, 8)  # a quarter turn
            return (im.size[0], im.size[1]) if turned else (im.size[1], im.size[0])
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise ImageReadError(f"{path}: cannot read image: {_reason(exc)}") from None


_thread = threading.local()


@contextmanager
def quiet_decoders() -> Iterator[None]:
    """Inside, decoders' warnings and log lines (what they can read past: corrupt EXIF,
    odd tags) reach nobody: the pixels either come back, or the failure becomes one error
    line. The warning filters and loggers are process-wide and ``catch_warnings`` is not
    thread-safe, so threads that decode for a caller holding this context run
    ``decoding_thread`` first and leave the filters alone."""
    quiet = [logging.getLogger(name) for name in ("tifffile", "PIL")]
    was = [logger.disabled for logger in quiet]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in quiet:
            logger.disabled = True
        try:
            yield
        finally:
            for logger, disabled in zip(quiet, was):
                logger.disabled = disabled


def decoding_thread() -> None:
    """A thread pool's initializer: this thread decodes inside the caller's ``quiet_decoders``."""
    _thread.quieted = True


def _read_any(path: Path, mask: bool = False, bits: int | None = None) -> np.ndarray:
    if getattr(_thread, "quieted", False):
        return _decode(path, mask, bits)
    with quiet_decoders():
        return _decode(path, mask, bits)


def _sixteen_bit_colour(im) -> bool:
    """Whether Pillow opened 16-bit-per-sample colour as its 8-bit RGB(A), which keeps
    each sample's high byte (a tile's raw mode says what the file holds: RGB;16B)."""
    return im.mode in ("RGB", "RGBA") and any(";16" in str(tile[3]) for tile in im.tile)


def _decode(path: Path, mask: bool, bits: int | None = None) -> np.ndarray:
    try:
        from PIL import Image

        if path.suffix.lower() in (".tif", ".tiff"):
            try:  # Pillow decodes the common 8-bit TIFFs in C (tifffile's PackBits is Python)
                with Image.open(path) as im:
                    if im.mode in ("L", "RGB", "1", "RGBA", "LA", "P", *_TO_RGB) and not _sixteen_bit_colour(im):
                        return _pillow_pixels(im, mask)
            except Exception:  # noqa: BLE001 - let tifffile try, and report its reason
                pass
            import tifffile

            return tifffile.imread(path, key=0)

        with Image.open(path) as im:
            if _orientation(im) != 1:  # a camera's: pixels as shown, as masks are drawn on them
                from PIL import ImageOps

                return _pillow_pixels(ImageOps.exif_transpose(im), mask)
            if _sixteen_bit_colour(im) and not mask:
                # no decoder here gives such a PNG's low bytes: its high bytes, put back in
                # place, are what bits 16 keeps; fewer bits would need the low ones
                if bits not in (None, 16):
                    raise ImageReadError(f"{path}: a 16-bit colour {path.suffix} file is read to its top 8 bits "
                                         f"only, so patches.bits {bits} cannot apply; save the images as "
                                         f"16-bit TIFF")
                return np.asarray(im).astype(np.uint16) << 8
            return _pillow_pixels(im, mask)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise ImageReadError(f"{path}: cannot read image: {_reason(exc)}") from None


def _orientation(im) -> int:
    """A JPEG's EXIF orientation (1: as stored). Cameras write it; other formats are read
    as stored (a PNG's EXIF may follow its pixels, and reading it would decode them)."""
    return im.getexif().get(0x0112, 1) if im.format in ("JPEG", "MPO") else 1


_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")  # colour models whose raw samples are not RGB


def _pillow_pixels(im, mask: bool) -> np.ndarray:
    if im.mode in _TO_RGB:
        return np.asarray(im.convert("RGB"))
    if im.mode != "P":
        return np.asarray(im)
    if not mask:
        return np.asarray(im.convert("RGB"))
    grey = np.asarray(im.convert("L"))
    if set(np.unique(grey).tolist()) <= {0, 255}:
        return grey  # a black-and-white palette: white is anomalous, whatever the index order
    # a colour palette (Pascal VOC's): the index is the class, 0 the background; its
    # colours' grey levels are not classes (VOC's dark red (128, 0, 0) is grey 38)
    return np.asarray(im)


def _to_uint8(array: np.ndarray, path: Path, bits: int | None = None) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        # a pixel keeps the top 8 of its ``bits`` significant bits, one mapping for every
        # image of a data set (a per-image stretch would make two images' values disagree).
        # Without ``bits``, data of 12 bits or fewer would come out with at most 16 grey
        # levels, or black: refused, naming the key that reads them
        top = int(array.max(initial=0))
        if bits is None and top < 4096:
            raise ImageReadError(f"{path}: 16-bit pixels that reach only {top} (data of 12 bits or fewer?): "
                                 f"keeping a 16-bit pixel's top 8 bits would leave {(top >> 8) + 1} grey "
                                 f"level(s); set patches.bits (--bits) to the data's bit depth, e.g. 12")
        bits = 16 if bits is None else bits
        if top >> bits:
            raise ImageReadError(f"{path}: 16-bit pixels reach {top}, more than {bits} bits hold "
                                 f"({(1 << bits) - 1}); patches.bits (--bits) is too small for these images")
        return (array >> (bits - 8)).astype(np.uint8)
    if array.dtype.kind in "iu" and array.max(initial=0) <= 255 and array.min(initial=0) >= 0:
        return array.astype(np.uint8)
    raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}; expected 8- or 16-bit")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
