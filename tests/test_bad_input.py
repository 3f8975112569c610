"""Every user mistake: one line on stderr naming the file or flag, exit 2, nothing written."""

import numpy as np
import pytest
from PIL import Image

from conftest import oneclass


def _folder(root, image_size=(40, 40), mask=None, mask_size=None):
    (root / "normal").mkdir(parents=True)
    (root / "anomalous" / "crack").mkdir(parents=True)
    Image.fromarray(np.zeros(image_size, np.uint8)).save(root / "normal" / "a.png")
    Image.fromarray(np.zeros(image_size, np.uint8)).save(root / "anomalous" / "crack" / "b.png")
    if mask is None:
        mask = np.zeros(mask_size or image_size, np.uint8)
        mask[:10, :10] = 255
    Image.fromarray(mask).save(root / "anomalous" / "crack" / "b_mask.png")
    return root


def _fails(tmp_path, *args, expect):
    out = tmp_path / "out"
    result = oneclass("extract-patches", *args, "--out", out)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oneclass: error:"), result.stderr
    assert expect in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    return result


def test_missing_root(tmp_path):
    _fails(tmp_path, "-d", "folder", "--root", tmp_path / "nowhere", expect="nowhere: dataset root not found")


def test_unknown_dataset_suggests(tmp_path):
    _fails(tmp_path, "-d", "nanofiber", expect="unknown dataset 'nanofiber' (did you mean 'nanofibre'?)")


def test_mask_size_differs(tmp_path):
    root = _folder(tmp_path / "d", mask_size=(40, 39))
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="b_mask.png: mask size 39x40 does not match")


def test_mask_values_not_binary(tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[0, 0] = 7
    root = _folder(tmp_path / "d", mask=mask)
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="b_mask.png: mask values must be")


def test_truncated_image(tmp_path):
    root = _folder(tmp_path / "d")
    path = root / "normal" / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="a.png: cannot read image")


def test_empty_dataset(tmp_path):
    (tmp_path / "d" / "normal").mkdir(parents=True)
    _fails(tmp_path, "-d", "folder", "--root", tmp_path / "d", expect="no images found")


def test_patch_larger_than_image(tmp_path):
    root = _folder(tmp_path / "d")
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 41, expect="patch size 41 is larger than the image")


@pytest.mark.parametrize("flag,value,expect", [
    ("--stride", "0", "--stride: patches.stride: must be >= 1, got 0"),
    ("--stride", "-3", "--stride: patches.stride: must be >= 1, got -3"),
    ("--mask-frac", "0", "--mask-frac: patches.mask_frac: must be in (0, 1], got 0.0"),
    ("--mask-frac", "1.5", "--mask-frac: patches.mask_frac: must be in (0, 1], got 1.5"),
    ("--channels", "2", "--channels: must be 1 or 3"),
])
def test_bad_flags(tmp_path, flag, value, expect):
    _fails(tmp_path, flag, value, expect=expect)


def test_level_on_a_plain_image_dataset(tmp_path):
    _fails(tmp_path, "--level", "1", expect="--level: dataset 'synthetic' has no pyramid levels")


def test_missing_mask_in_folder_layout(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "anomalous" / "crack" / "b_mask.png").unlink()
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="b.png: no mask found")


def test_failure_midway_leaves_no_store(tmp_path):
    root = _folder(tmp_path / "d")
    # the second image is broken: the first was already extracted when it fails
    (root / "normal" / "z.png").write_bytes(b"not a png")
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 8, expect="z.png: cannot read image")


def test_no_images_fails_and_a_one_patch_store_is_valid(tmp_path):
    from oneclass.data.store import PatchStore

    result = oneclass("extract-patches", "--set", "dataset.normal=0", "--set", "dataset.anomalous=0",
                      "--out", tmp_path / "s", "-q")
    assert result.returncode == 2 and "no images found" in result.stderr
    root = tmp_path / "d"
    (root / "normal").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "normal" / "a.png")
    result = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 16,
                      "--max-per-image", 1, "--out", tmp_path / "one", "-q")
    assert result.returncode == 0, result.stderr
    store = PatchStore.open(tmp_path / "one")
    assert len(store) == 1 and store.images.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("args,expect", [
    (["--whole-image", "--resize", "32", "--size", "16"], "--size: not used with --whole-image"),
    (["--whole-image", "--resize", "32", "--stride", "16"], "--stride: not used with --whole-image"),
    (["--whole-image"], "--resize: --whole-image needs the side of the square"),
])
def test_whole_image_flags(tmp_path, args, expect):
    _fails(tmp_path, *args, expect=expect)


def test_whole_image_refuses_slides(tmp_path):
    from oneclass.data.datasets.synthetic import write_synthetic_slide

    (tmp_path / "slides").mkdir()
    write_synthetic_slide(tmp_path / "slides" / "tumor_001.tif", 512, 512, tile=256)
    _fails(tmp_path, "-d", "camelyon16", "--root", tmp_path / "slides", "--whole-image", "--resize", "32",
           expect="--whole-image: dataset 'camelyon16' holds whole-slide images")


def test_noisy_mask_is_refused_naming_the_way_out_and_taken_with_a_threshold(tmp_path):
    from oneclass.data.store import PatchStore

    mask = np.zeros((40, 40), np.uint8)
    mask[:10, :10] = 255
    mask[10, :10] = 37  # an anti-aliased edge
    mask[20, 20] = 3  # compression noise
    root = _folder(tmp_path / "d", mask=mask)
    _fails(tmp_path, "-d", "folder", "--root", root, "--size", 10,
           expect="b_mask.png: mask values must be {0, 1} or {0, 255}, found 0, 3, 37, 255; if the "
                  "others are edge or compression noise, set patches.mask_threshold (--mask-threshold")
    done = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 10, "--mask-frac", 0.5,
                    "--mask-threshold", 128, "--out", tmp_path / "s", "-q")
    assert done.returncode == 0, done.stderr
    store = PatchStore.open(tmp_path / "s")
    anomalous = [(r["source"], r["x"], r["y"]) for r in store.index if r["label"] == "1"]
    assert anomalous == [("anomalous/crack/b.png", "0", "0")]  # 37 and 3 are below 128
    assert store.meta["params"]["mask_threshold"] == 128
    low = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 10, "--mask-frac", 0.01,
                   "--mask-threshold", 2, "--out", tmp_path / "t", "-q")
    assert low.returncode == 0, low.stderr
    labels = {(r["x"], r["y"]): r["label"] for r in PatchStore.open(tmp_path / "t").index
              if r["source"] == "anomalous/crack/b.png"}
    assert labels[("0", "10")] == "1" and labels[("20", "20")] == "1"  # the edge row and the speck
    _fails(tmp_path, "-d", "folder", "--root", root, "--mask-threshold", 0,
           expect="--mask-threshold: patches.mask_threshold: must be in [1, 65535], got 0")


def test_reader_warnings_do_not_reach_stderr(tmp_path):
    """A TIFF with a corrupt tag (its data said to run past the end of the file): Pillow
    warns and reads the pixels; the user sees only oneclass's own output."""
    import struct

    from PIL import Image, TiffImagePlugin

    root = _folder(tmp_path / "d")
    path = root / "normal" / "a.tif"
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[270] = "x" * 20  # ImageDescription
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(path, tiffinfo=tags)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", data[ifd:ifd + 2])[0], 12):
        if struct.unpack("<H", data[entry:entry + 2])[0] == 270:
            data[entry + 4:entry + 8] = struct.pack("<I", 10**6)  # a million bytes of description
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="Tag data larger than file"):
        with Image.open(path) as im:
            im.load()  # the file does make Pillow warn
    done = oneclass("extract-patches", "-d", "folder", "--root", root, "--size", 8, "--out", tmp_path / "s", "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("args, expect", [
    (["train", "recipes/demo.yaml", "--bogus"], "No such option: --bogus"),
    (["train"], "Missing argument 'recipe'"),
    (["train", "recipes/demo.yaml", "--repeats", "0"], "'--repeats'"),
    (["evaluate", "x", "--plot"], "Option '--plot' requires an argument"),
    (["bogus"], "No such command 'bogus'"),
])
def test_a_mistyped_command_line_is_one_line(args, expect):
    """click's own three lines (Usage, Try, Error) become ours: one line naming the flag
    and the command whose --help tells more, exit 2."""
    result = oneclass(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oneclass: error:"), result.stderr
    assert expect in lines[0] and lines[0].endswith("--help)"), lines[0]


def test_bare_command_groups_still_show_their_help():
    result = oneclass("list")
    assert result.returncode == 2 and result.stderr.startswith("Usage: ")
    assert "Commands:" in result.stderr and "methods" in result.stderr
