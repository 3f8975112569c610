"""Image and mask readers: pixel types and colour models converted as a user's files
need, against hand-made files; and the polygon rasteriser's rows at a region's edge."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from oneclass.data.readers import ImageReadError, read_image, read_mask
from oneclass.data.slides import fill_polygon


def test_a_16_bit_tiff_keeps_its_top_8_bits(tmp_path):
    values = np.array([[0, 255, 256, 4096], [32768, 65280, 65535, 1000]], np.uint16)
    tifffile.imwrite(tmp_path / "full.tif", values)
    assert read_image(tmp_path / "full.tif")[..., 0].tolist() == [[0, 0, 1, 16], [128, 255, 255, 3]]


@pytest.mark.parametrize("top, levels", [(4000, 16), (255, 1)])
def test_16_bit_data_of_few_significant_bits_is_refused_not_blackened(tmp_path, top, levels):
    tifffile.imwrite(tmp_path / "dim.tif", np.linspace(0, top, 64).astype(np.uint16).reshape(8, 8))
    with pytest.raises(ImageReadError, match=rf"dim.tif: 16-bit pixels that reach only {top} .*would leave "
                                             rf"{levels} grey level\(s\); set patches.bits \(--bits\) to the "
                                             rf"data's bit depth, e.g. 12"):
        read_image(tmp_path / "dim.tif")


def test_bits_names_a_16_bit_pixels_significant_bits(tmp_path):
    values = np.array([[0, 15, 16, 2048, 4095]], np.uint16)
    tifffile.imwrite(tmp_path / "twelve.tif", values)
    assert read_image(tmp_path / "twelve.tif", bits=12)[..., 0].tolist() == [[0, 0, 1, 128, 255]]
    assert read_image(tmp_path / "twelve.tif", bits=16)[..., 0].tolist() == [[0, 0, 0, 8, 15]]  # dark, as asked
    with pytest.raises(ImageReadError, match=r"twelve.tif: 16-bit pixels reach 4095, more than 10 bits hold "
                                             r"\(1023\); patches.bits \(--bits\) is too small"):
        read_image(tmp_path / "twelve.tif", bits=10)
    Image.fromarray(np.full((2, 2), 200, np.uint8)).save(tmp_path / "eight.png")
    assert (read_image(tmp_path / "eight.png", bits=12) == 200).all()  # 8-bit pixels are read as they are


def test_palette_and_cmyk_tiffs_come_back_as_their_colours(tmp_path):
    palette = Image.new("P", (4, 2))
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.tif")
    image = read_image(tmp_path / "palette.tif")
    assert image.shape == (2, 4, 3) and image[0, 1].tolist() == [200, 10, 20] and image[0, 0].tolist() == [0, 0, 0]
    Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(tmp_path / "white.tif")  # no ink: white
    assert (read_image(tmp_path / "white.tif") == 255).all()


def test_a_colour_palette_mask_reads_its_indices(tmp_path):
    mask = Image.new("P", (4, 4))
    mask.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # Pascal VOC: index 1 dark red, grey 38
    mask.putpixel((2, 1), 1)
    mask.save(tmp_path / "voc.png")
    got = read_mask(tmp_path / "voc.png")
    assert got.sum() == 1 and got[1, 2]


def test_a_black_and_white_palette_mask_counts_white_whatever_the_index_order(tmp_path):
    mask = Image.new("P", (4, 4))
    mask.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 white, 1 black
    for x in range(4):
        for y in range(4):
            mask.putpixel((x, y), 1)
    mask.putpixel((3, 2), 0)
    mask.save(tmp_path / "bw.png")
    got = read_mask(tmp_path / "bw.png")
    assert got.sum() == 1 and got[2, 3]


def test_a_region_ending_on_an_edges_endpoint_fills_its_last_row_as_a_taller_one_does():
    # an edge from (10, 7.5) starts exactly on the centre of row 7, the last of an 8-row region
    vertices = np.array([[0, 0], [10, 7.5], [10, 20], [0, 20]], float)
    assert np.array_equal(fill_polygon(vertices, 16, 8), fill_polygon(vertices, 16, 12)[:8])
    assert fill_polygon(vertices, 16, 8)[7].tolist() == [True] * 10 + [False] * 6


def _png_48_bit(path, rgb: np.ndarray) -> None:
    """A 16-bit-per-sample RGB PNG, which Pillow cannot write."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_colour_is_read_at_its_depth_not_through_pillows_8_bit_rgb(tmp_path):
    rgb = np.array([[[0, 1000, 4095], [2048, 16, 4000]]], np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert read_image(tmp_path / "rgb.tif", bits=12).tolist() == (rgb >> 4).tolist()
    with pytest.raises(ImageReadError, match=r"rgb.tif: 16-bit pixels that reach only 4095"):
        read_image(tmp_path / "rgb.tif")  # was 8-bit RGB of at most 15, without a word
    _png_48_bit(tmp_path / "rgb.png", rgb << 4)  # a PNG's low bytes are out of reach: bits 16 only
    assert read_image(tmp_path / "rgb.png").tolist() == (rgb >> 4).tolist()
    with pytest.raises(ImageReadError, match=r"rgb.png: a 16-bit colour .png file is read to its top 8 bits "
                                             r"only, so patches.bits 12 cannot apply; save the images as 16-bit TIFF"):
        read_image(tmp_path / "rgb.png", bits=12)
    _png_48_bit(tmp_path / "dim.png", rgb)
    with pytest.raises(ImageReadError, match=r"dim.png: 16-bit pixels that reach only 3840"):
        read_image(tmp_path / "dim.png")


def test_a_cameras_orientation_tag_turns_the_pixels_as_they_are_shown(tmp_path):
    """A phone's JPEG stores its pixels sideways with an EXIF orientation; masks are drawn
    on the image as shown, so the pixels are turned the same way (size included)."""
    from oneclass.data.readers import image_size

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (40, 20, 3) and image_size(tmp_path / "phone.jpg") == (40, 20)
    assert shown[:18].min() > 240 and shown[22:].max() < 15  # the left half is now on top
    Image.fromarray(stored).save(tmp_path / "plain.jpg")
    assert read_image(tmp_path / "plain.jpg").shape == (20, 40, 3) and image_size(tmp_path / "plain.jpg") == (20, 40)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_a_mask_drawn_only_in_alpha_is_read_from_alpha(tmp_path, mode):
    """A transparent layer saved as the mask: one colour everywhere, the shape in alpha
    (read as an empty mask before, its image then normal without a word)."""
    alpha = np.zeros((8, 8), np.uint8)
    alpha[2:5, 3:6] = 255
    colour = np.zeros((8, 8, len(mode) - 1), np.uint8)
    Image.fromarray(np.dstack([colour, alpha]).squeeze(), mode).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == (alpha > 0).tolist()
    opaque = np.dstack([np.where(alpha > 0, 255, 0).astype(np.uint8)[..., None].repeat(len(mode) - 1, 2),
                        np.full((8, 8), 255, np.uint8)])
    Image.fromarray(opaque.squeeze(), mode).save(tmp_path / "o.png")  # BUSI's: colour draws, alpha opaque
    assert read_mask(tmp_path / "o.png").tolist() == (alpha > 0).tolist()
