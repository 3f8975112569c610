"""The papers' patch rules on hand-made inputs, computed independently here."""

import numpy as np
import pytest

from oneclass.data import patches as P


def test_grid_stops_where_the_patch_no_longer_fits():
    assert P.grid(10, 4, 3).tolist() == [0, 3, 6]
    assert P.grid(9, 4, 3).tolist() == [0, 3]
    assert P.grid(4, 4, 1).tolist() == [0]
    assert P.grid(3, 4, 1).tolist() == []


def test_window_sums_match_a_plain_loop():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 41)) < 0.3
    table = P.integral_image(mask)
    ys, xs = np.meshgrid(P.grid(37, 8, 5), P.grid(41, 8, 5), indexing="ij")
    sums = P.window_sums(table, ys.ravel(), xs.ravel(), 8)
    expected = [mask[y:y + 8, x:x + 8].sum() for y, x in zip(ys.ravel(), xs.ravel())]
    assert sums.tolist() == expected


def test_known_block_gives_known_labels_at_the_threshold_edge():
    # a 10x10 mask with a 4x5 block (20 px) in the top-left corner; 10x10 patches, stride 5
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[0:4, 0:5] = 1
    ys, xs = np.array([0, 0, 5, 5]), np.array([0, 5, 0, 5])
    frac, label, subclass = P.label_patches(labels, ["scratch"], ys, xs, 10, 0.20)
    assert frac.tolist() == [0.20, 0.0, 0.0, 0.0]
    assert label.tolist() == [1, 0, 0, 0]  # exactly 20% counts: the rule is ">="
    assert subclass == ["scratch", "good", "good", "good"]
    _, label, _ = P.label_patches(labels, ["scratch"], ys, xs, 10, 0.21)
    assert label.tolist() == [0, 0, 0, 0]  # one pixel short of 21%


def test_several_defect_types_take_the_most_frequent():
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:, :3] = 1  # 24 px of "a"
    labels[:, 3:7] = 2  # 32 px of "b"
    _, label, subclass = P.label_patches(labels, ["a", "b"], np.array([0]), np.array([0]), 8, 0.5)
    assert label.tolist() == [1] and subclass == ["b"]


@pytest.mark.parametrize("size,out", [(128, 32), (64, 32), (30, 20), (16, 24)])
def test_resize_shapes_dtypes_and_area_average(size, out):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(size * 2, size * 2, 3), dtype=np.uint8)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[: size // 2] = True
    ys, xs = np.array([0, size]), np.array([0, size])
    images, masks = P.cut_and_resize(image, mask, ys, xs, size, out, 3)
    assert images.shape == (2, 3, out, out) and images.dtype == np.uint8
    assert masks.shape == (2, out, out) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    if size % out == 0:  # integer factor: each output pixel is the mean of a block
        k = size // out
        block = image[:size, :size].reshape(out, k, out, k, 3).mean(axis=(1, 3))
        assert np.abs(images[0].transpose(1, 2, 0).astype(float) - block).max() <= 0.5 + 1e-6
        assert masks[0, : out // 2].all() and not masks[0, out // 2:].any()
        assert not masks[1].any()


def test_grayscale_conversion_matches_pillow_luma():
    from PIL import Image

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    images, _ = P.cut_and_resize(image, None, np.array([0]), np.array([0]), 8, None, 1)
    pil = np.asarray(Image.fromarray(image).convert("L")).astype(int)
    assert np.abs(images[0, 0].astype(int) - pil).max() <= 1


def test_sampling_keeps_grid_order_and_is_seeded():
    ys, xs = np.arange(100), np.arange(100)
    a = P.sample_positions(ys, xs, 10, np.random.default_rng(5))
    b = P.sample_positions(ys, xs, 10, np.random.default_rng(5))
    assert a[0].tolist() == b[0].tolist() and len(a[0]) == 10
    assert a[0].tolist() == sorted(a[0].tolist())


def test_whole_image_is_one_item_resized_by_block_means():
    # a 4 x 6 image → 2 x 2: each output pixel is the mean of a 2-row x 3-column block
    image = np.arange(24, dtype=np.uint8).reshape(4, 6, 1) * 10
    labels = np.zeros((4, 6), dtype=np.uint8)
    labels[0:2, 0:2] = 1  # 4 of the 6 pixels of the top-left block
    labels[3, 5] = 2  # one pixel of the bottom-right block, another type
    chunk = P.whole_image(image, labels, ["scratch", "hole"], "good", 2, 1)
    blocks = image[:, :, 0].reshape(2, 2, 2, 3).mean(axis=(1, 3))
    assert chunk.images.shape == (1, 1, 2, 2)
    assert chunk.images[0, 0].tolist() == np.rint(blocks).astype(np.uint8).tolist()
    assert chunk.masks[0].tolist() == [[1, 0], [0, 0]]  # 4/6 >= 0.5, 1/6 < 0.5
    assert chunk.label.tolist() == [1] and chunk.subclass == ["scratch"]  # 4 pixels beat 1
    assert chunk.anomaly_frac.tolist() == [5 / 24]
    assert chunk.x.tolist() == [0] and chunk.y.tolist() == [0]


def test_whole_image_label_comes_from_the_mask_or_the_subclass():
    image = np.full((5, 7, 3), 200, dtype=np.uint8)
    normal = P.whole_image(image, None, [], "good", 4, 1)
    assert normal.label.tolist() == [0] and normal.subclass == ["good"]
    assert normal.images.shape == (1, 1, 4, 4) and (normal.images == 200).all()  # luma of grey
    unmasked = P.whole_image(image, None, [], "crack", 4, 3)  # an anomalous folder, no mask
    assert unmasked.label.tolist() == [1] and unmasked.subclass == ["crack"]
    assert unmasked.masks.sum() == 0 and unmasked.anomaly_frac.tolist() == [0.0]
    empty = P.whole_image(image, np.zeros((5, 7), np.uint8), ["crack"], "good", 4, 3)
    assert empty.label.tolist() == [0]  # an empty mask marks nothing


def test_images_are_read_ahead_in_order_with_few_chunks_in_flight(monkeypatch):
    """Two threads decode and cut the next images while one is written; chunks come out
    in task order however the threads finish, and no more than two wait unwritten."""
    import random
    import threading
    import time

    from oneclass.data import extract as E

    started, lock = [], threading.Lock()
    written = []

    def fake_run(task):
        with lock:
            started.append(task)
            ahead = len(started) - len(written)
        time.sleep(random.Random(task).random() / 200)  # finish out of order
        return task, ahead

    monkeypatch.setattr(E, "run_task", fake_run)
    tasks = list(range(12))
    for chunk, ahead in E._read_ahead(tasks):
        written.append(chunk)
        assert ahead <= 3  # the one being written and two in flight
    assert written == tasks


def test_reading_ahead_leaves_the_warning_filters_and_decoder_loggers_as_they_were(tmp_path):
    """Decoders are quieted once for the reading threads: per-decode catch_warnings in two
    threads left an 'ignore' filter (and PIL's logger off) for the rest of the process."""
    import logging
    import warnings

    from PIL import Image

    from oneclass.data import extract as E
    from oneclass.data.datasets.base import ImageItem

    for i in range(12):
        Image.fromarray(np.full((64, 64), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
    params = E.ExtractParams(size=32, stride=16)
    tasks = [E.ImageTask(ImageItem(str(tmp_path / f"{i}.png"), P.NORMAL, tmp_path / f"{i}.png"), params, 1)
             for i in range(12)]
    filters = list(warnings.filters)
    for _ in range(5):
        chunks = list(E._read_ahead(tasks))
        assert [int(c.images[0, 0, 0, 0]) for c in chunks] == [i * 10 for i in range(12)]
    assert warnings.filters == filters
    assert not logging.getLogger("PIL").disabled and not logging.getLogger("tifffile").disabled


@pytest.mark.parametrize("pattern", ["0010", "1000", "0001", "0000", "1111", "0110110"])
def test_sparse_rows_read_back_as_written_and_zero_runs_are_holes(tmp_path, pattern):
    """Masks are written sparse: runs of all-zero rows are skipped over (holes that read
    back as zeros), a trailing run included; the .npy is what np.save would write."""
    from oneclass.data.store import NpyStreamWriter

    rows = np.zeros((len(pattern) * 8, 64, 64), np.uint8)  # 4 KiB rows: a zero run of one is a hole
    for i, bit in enumerate(pattern):
        if bit == "1":
            rows[i * 8:(i + 1) * 8, 5, 7] = 1
    writer = NpyStreamWriter(tmp_path / "masks.npy", (64, 64), sparse=True)
    for chunk in np.array_split(rows, 3):
        writer.append(chunk)
    writer.close()
    assert np.array_equal(np.load(tmp_path / "masks.npy", mmap_mode="r"), rows)
    assert (tmp_path / "masks.npy").stat().st_size == 128 + rows.nbytes
    if _holes_supported(tmp_path):
        written = pattern.count("1") * 8 * 64 * 64
        allocated = (tmp_path / "masks.npy").stat().st_blocks * 512
        assert allocated <= 4096 + written + 4096 * 3  # the header's page, the rows, page edges


def _holes_supported(folder) -> bool:
    """Whether the file system leaves a skipped-over range unallocated."""
    probe = folder / "probe"
    with open(probe, "wb") as fh:
        fh.seek(1 << 20)
        fh.write(b"x")
    return probe.stat().st_blocks * 512 < 1 << 20


def test_whole_image_stores_refuse_a_patch_threshold_and_record_their_own_rules(tmp_path):
    """--mask-frac did nothing with --whole-image (an image is anomalous where its mask
    marks any pixel), while meta.json recorded the patch rule as applied."""
    import json

    from oneclass.data.datasets.synthetic import SyntheticDataset
    from oneclass.data.extract import ExtractParams, extract
    from oneclass.errors import OneclassError

    with pytest.raises(OneclassError, match=r"^--mask-frac: not used with --whole-image"):
        ExtractParams(whole_image=True, resize=16, mask_frac=0.9).check()
    dataset = SyntheticDataset(None, SyntheticDataset.Options(normal=1, anomalous=1, height=32, width=32))
    path, _ = extract(dataset, ExtractParams(whole_image=True, resize=16), tmp_path / "whole")
    rules = json.loads((path / "meta.json").read_text())["rules"]
    assert rules["label"] == "anomalous iff its mask marks any pixel, or its subclass is a defect's"
    assert "aspect ratio not kept" in rules["item"] and "grid" not in rules
