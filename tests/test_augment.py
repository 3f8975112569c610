import pytest
import torch

from oneclass.augment import parse_augment
from oneclass.errors import OneclassError

ALL = ["hflip", "vflip", "rot90", "rotate:15", "resized_crop:0.6", "cutout:0.25", "brightness:0.2", "contrast:0.3"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=8, c=3, h=16, w=16, seed=0):
    return torch.rand(n, c, h, w, generator=gen(seed))


@pytest.mark.parametrize("spec, says", [
    ("hflp", "did you mean 'hflip'?"),
    ("rotat:10", "did you mean 'rotate'?"),
    ("rotate", "needs a value"),
    ("rotate:", "needs a value"),
    ("rotate:0", "(0, 180]"),
    ("rotate:181", "(0, 180]"),
    ("rotate:abc", "(0, 180]"),
    ("rotate:nan", "(0, 180]"),
    ("resized_crop:0", "(0, 1]"),
    ("resized_crop:1.5", "(0, 1]"),
    ("cutout:1", "(0, 1)"),
    ("cutout:-0.1", "(0, 1)"),
    ("brightness:2", "(0, 1]"),
    ("hflip:0.5", "takes no value"),
    ("rot90:2", "takes no value"),
])
def test_parse_errors_are_one_line_naming_key_and_item(spec, says):
    with pytest.raises(OneclassError) as caught:
        parse_augment(["vflip", spec], key="train.augment")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.augment: ")
    assert repr(spec) in message and says in message


@pytest.mark.parametrize("specs", ["hflip", [3], None])
def test_parse_refuses_non_lists_and_non_strings(specs):
    with pytest.raises(OneclassError, match=r"^method\.augment: ") as caught:
        parse_augment(specs)
    assert "\n" not in str(caught.value)


def test_specs_are_kept_in_order():
    assert parse_augment(["cutout:0.25", " hflip ", "rotate: 15"]).specs == ("cutout:0.25", "hflip", "rotate:15")


def test_empty_spec_is_identity():
    x = batch()
    augment = parse_augment([])
    assert augment.specs == () and augment(x) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_shape_dtype_device_kept(dtype, n):
    x = batch(n).to(dtype)
    y = parse_augment(ALL)(x, gen())
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.numel() == 0 or (y.min() >= 0 and y.max() <= 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_matches_cpu():
    x = batch()
    augment = parse_augment(ALL)
    y = augment(x.cuda(), gen())
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), augment(x, gen()), atol=1e-4, rtol=0)


def test_seeded_generator_is_deterministic():
    x, augment = batch(), parse_augment(ALL)
    assert torch.equal(augment(x, gen(1)), augment(x, gen(1)))
    assert not torch.equal(augment(x, gen(1)), augment(x, gen(2)))


def test_global_generator_when_none_given():
    x, augment = batch(), parse_augment(ALL)
    torch.manual_seed(5)
    first = augment(x)
    torch.manual_seed(5)
    assert torch.equal(augment(x), first)


@pytest.mark.parametrize("spec, dim", [("hflip", 3), ("vflip", 2)])
def test_flips_are_exact_and_about_half(spec, dim):
    x = batch(256, 1, 5, 5)
    y = parse_augment([spec])(x, gen())
    kept = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(dim)).flatten(1).all(1)
    assert (kept | flipped).all()
    assert 90 < flipped.sum() < 166


def test_rot90_gives_exact_rotations_all_four():
    x = batch(256, 2, 6, 6)
    y = parse_augment(["rot90"])(x, gen())
    match = torch.stack([(y == torch.rot90(x, k, (2, 3))).flatten(1).all(1) for k in range(4)], 1)
    assert (match.sum(1) == 1).all()
    assert (match.sum(0) > 30).all()


def test_rot90_refuses_non_square_in_one_line():
    with pytest.raises(OneclassError, match=r"^method\.augment: rot90 needs square images, got 8×12$"):
        parse_augment(["rot90"])(batch(2, 3, 8, 12), gen())


def test_rotate_keeps_a_constant_image_constant():
    # Border reflection: the corners brought in are the image's own pixels, so not just
    # the centre but the whole image stays constant.
    x = torch.full((16, 3, 20, 20), 0.7)
    y = parse_augment(["rotate:90"])(x, gen())
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_rotate_non_square_keeps_a_constant_image_constant():
    x = torch.full((4, 1, 10, 30), 0.3)
    torch.testing.assert_close(parse_augment(["rotate:180"])(x, gen()), x, atol=1e-6, rtol=0)


def test_tiny_rotation_is_near_identity():
    x = batch()
    torch.testing.assert_close(parse_augment(["rotate:0.001"])(x, gen()), x, atol=1e-3, rtol=0)


def test_rotate_does_rotate():
    x = batch()
    assert (parse_augment(["rotate:30"])(x, gen()) - x).abs().mean() > 0.05


def test_full_resized_crop_is_identity():
    x = batch()
    torch.testing.assert_close(parse_augment(["resized_crop:1.0"])(x, gen()), x, atol=1e-5, rtol=0)


def test_resized_crop_stays_within_input_range():
    x = 0.2 + 0.5 * batch(64)
    y = parse_augment(["resized_crop:0.3"])(x, gen())
    assert y.min() >= 0.2 - 1e-6 and y.max() <= 0.7 + 1e-6
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("frac, h, w", [(0.25, 16, 16), (0.3, 20, 13), (0.5, 7, 7), (0.99, 9, 9)])
def test_cutout_zeroes_one_square_per_sample(frac, h, w):
    side = round(frac * min(h, w))
    x = torch.ones(64, 3, h, w)
    y = parse_augment([f"cutout:{frac}"])(x, gen())
    zero = y[:, 0] == 0
    assert (zero.flatten(1).sum(1) == side * side).all()
    assert torch.equal(zero[:, None].expand_as(y), y == 0)  # the same square in every channel
    rows, cols = zero.any(2).sum(1), zero.any(1).sum(1)  # a square, not any other shape
    assert (rows == side).all() and (cols == side).all()
    if side < min(h, w):
        assert len({tuple(z.nonzero()[0].tolist()) for z in zero}) > 1  # positions vary


@pytest.mark.parametrize("spec", ["brightness:1", "contrast:1"])
def test_photometric_ops_stay_in_unit_range_and_vary(spec):
    x = batch(64)
    y = parse_augment([spec])(x, gen())
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)


def test_ops_apply_in_the_given_order():
    x = torch.full((32, 1, 8, 8), 0.5)
    cut_last = parse_augment(["brightness:0.3", "cutout:0.5"])(x, gen())
    assert ((cut_last == 0).flatten(1).sum(1) == 16).all()
    cut_first = parse_augment(["cutout:0.5", "brightness:0.3"])(x, gen())
    assert (cut_first == 0).sum() < 32 * 16
