"""Inputs: .npy as is, images the Caffe way (BGR, 0-255, resize + centre crop, mean, scale)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import KAIMING, ROOT
from converter import caffe_pb2, preprocess
from converter.errors import ConverterError
from converter.io.caffemodel import read_blob
from converter.preprocess import center_crop, load_input, random_input, resize_bilinear

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

CHELSEA = ROOT / "examples" / "chelsea.png"  # 451 x 300 (W x H)
COFFEE = ROOT / "examples" / "coffee.png"  # 600 x 400
KAIMING_MEAN = KAIMING / "ResNet_mean.binaryproto"  # 1x3x224x224, BGR
NET = (1, 3, 224, 224)


def pil_bgr(path) -> np.ndarray:
    """Read with Pillow (RGB) and flip to BGR: an independent decoder for the checks."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))[:, :, ::-1].astype(np.float32)


def expected_chw(bgr: np.ndarray, resized_hw: tuple[int, int], crop_hw: tuple[int, int]):
    """OpenCV's bilinear resize to resized_hw, centre crop, HWC -> CHW."""
    h, w = resized_hw
    resized = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    top, left = (h - crop_hw[0]) // 2, (w - crop_hw[1]) // 2
    crop = resized[top : top + crop_hw[0], left : left + crop_hw[1]]
    return crop.transpose(2, 0, 1)[np.newaxis]


def write_mean(path, array: np.ndarray) -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(array.shape)
    blob.data.extend(array.astype(np.float32).ravel().tolist())
    path.write_bytes(blob.SerializeToString())


# ----------------------------------------------------------------------------- noise, .npy


def test_random_input_is_deterministic_mean_subtracted_pixel_scale():
    a = random_input((2, 3, 64, 64), seed=0)
    assert a.shape == (2, 3, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, random_input((2, 3, 64, 64), seed=0))
    assert not np.array_equal(a, random_input((2, 3, 64, 64), seed=1))
    assert abs(float(a.std()) - 50.0) < 1.0 and abs(float(a.mean())) < 1.0


def test_npy_is_used_as_is(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 7))
    np.save(tmp_path / "x.npy", x)
    got = load_input(tmp_path / "x.npy", (1, 3, 5, 7))  # the batch size may differ
    assert got.dtype == np.float32 and got.shape == (2, 3, 5, 7)
    np.testing.assert_array_equal(got, x.astype(np.float32))
    np.save(tmp_path / "chw.npy", x[0])
    assert load_input(tmp_path / "chw.npy", (1, 3, 5, 7)).shape == (1, 3, 5, 7)


def test_npy_shape_and_content_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 5, 6), np.float32))
    with pytest.raises(ConverterError, match=r"x.npy: input shape \(1, 3, 5, 6\) does not fit"):
        load_input(tmp_path / "x.npy", (1, 3, 5, 7))
    with pytest.raises(ConverterError, match="mean and scale apply to images only"):
        load_input(tmp_path / "x.npy", (1, 3, 5, 6), mean="1,2,3")
    np.save(tmp_path / "s.npy", np.array(["a"]))
    with pytest.raises(ConverterError, match="expected numbers"):
        load_input(tmp_path / "s.npy", (1,))
    (tmp_path / "bad.npy").write_bytes(b"\x00\x01garbage")  # (a text is named as one)
    with pytest.raises(ConverterError, match="bad.npy: not a readable .npy"):
        load_input(tmp_path / "bad.npy", (1, 3, 5, 6))
    with pytest.raises(ConverterError, match="no such input file"):
        load_input(tmp_path / "missing.png", NET)


# ----------------------------------------------------------------------------- images


def test_image_resize_crop_and_bgr_order_match_an_independent_pipeline():
    got = load_input(CHELSEA, NET)
    # 300x451: shorter side 300 -> 256, longer 451 * 256 / 300 = 384.85 -> 385; crop 224.
    want = expected_chw(pil_bgr(CHELSEA), (256, 385), (224, 224))
    assert got.shape == (1, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert 0 <= got.min() and got.max() <= 255


def test_portrait_image_and_rectangular_input(tmp_path):
    with Image.open(COFFEE) as img:
        img.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "portrait.png")  # 400 x 600
    got = load_input(tmp_path / "portrait.png", (1, 3, 227, 200))
    # S = round(227 / 0.875) = 259 for the shorter (width) side; height 600 * 259 / 400 = 388.5
    # -> 389 (half up).
    want = expected_chw(pil_bgr(tmp_path / "portrait.png"), (389, 259), (227, 200))
    assert got.shape == (1, 3, 227, 200)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_channel_order_is_bgr(tmp_path):
    pixels = np.zeros((300, 300, 3), np.uint8)
    pixels[..., 0] = 200  # red, as Pillow (RGB) writes it
    pixels[..., 2] = 10  # a little blue
    Image.fromarray(pixels).save(tmp_path / "red.png")
    got = load_input(tmp_path / "red.png", NET)
    np.testing.assert_allclose(got[0, 0], 10, atol=1e-4)  # B
    np.testing.assert_allclose(got[0, 1], 0, atol=1e-4)  # G
    np.testing.assert_allclose(got[0, 2], 200, atol=1e-4)  # R


def test_pillow_fallback_gives_the_same_numbers(monkeypatch):
    with_opencv = load_input(COFFEE, NET)
    monkeypatch.setattr(preprocess, "_load_cv2", lambda: None)
    with_pillow = load_input(COFFEE, NET)
    np.testing.assert_array_equal(with_pillow, with_opencv)  # PNG decodes identically


def test_no_image_library_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(preprocess, "_load_cv2", lambda: None)
    monkeypatch.setattr(preprocess, "_load_pil", lambda: None)
    with pytest.raises(ConverterError, match="needs OpenCV or Pillow"):
        load_input(CHELSEA, NET)


@pytest.mark.parametrize("use_cv2", [True, False])
def test_unreadable_image_is_a_clear_error(tmp_path, monkeypatch, use_cv2):
    if not use_cv2:
        monkeypatch.setattr(preprocess, "_load_cv2", lambda: None)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ConverterError, match="broken.jpg: .* cannot"):
        load_input(tmp_path / "broken.jpg", NET)


def test_image_needs_a_4d_net_input_with_1_or_3_channels():
    with pytest.raises(ConverterError, match="give a .npy instead"):
        load_input(CHELSEA, (1, 4, 224, 224))
    with pytest.raises(ConverterError, match="give a .npy instead"):
        load_input(CHELSEA, (1, 150528))


def test_grayscale_net_input():
    got = load_input(CHELSEA, (1, 1, 64, 64))
    assert got.shape == (1, 1, 64, 64)
    color = load_input(CHELSEA, (1, 3, 64, 64))[0]
    luma = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]  # ITU-R 601 from BGR
    np.testing.assert_allclose(got[0, 0], luma, atol=1.0)


def test_resize_bilinear_matches_opencv_inter_linear():
    image = np.random.default_rng(0).uniform(0, 255, size=(37, 53, 3)).astype(np.float32)
    for h, w in [(23, 31), (80, 101), (37, 20)]:
        ours = resize_bilinear(image, h, w)
        np.testing.assert_allclose(ours, cv2.resize(image, (w, h)), atol=1e-3)


def test_center_crop_offsets():
    image = np.arange(7 * 9).reshape(7, 9, 1)
    crop = center_crop(image, 4, 4)
    assert crop[0, 0, 0] == image[1, 2, 0] and crop.shape == (4, 4, 1)  # (7-4)//2, (9-4)//2
    with pytest.raises(ValueError):
        center_crop(image, 8, 4)


# ----------------------------------------------------------------------------- mean, scale


def test_kaiming_mean_image_is_subtracted_per_pixel():
    plain = load_input(CHELSEA, NET)
    mean = read_blob(KAIMING_MEAN)
    assert mean.shape == (1, 3, 224, 224)
    got = load_input(CHELSEA, NET, mean=KAIMING_MEAN)
    np.testing.assert_array_equal(got, plain - mean)
    # BGR: Kaiming's mean is about (103, 116, 123), blue lowest, red highest.
    channel_means = mean.mean(axis=(0, 2, 3))
    assert channel_means[0] < channel_means[1] < channel_means[2]
    assert load_input(CHELSEA, NET, mean=str(KAIMING_MEAN)).tobytes() == got.tobytes()


def test_per_channel_mean_and_scale():
    plain = load_input(COFFEE, NET)
    got = load_input(COFFEE, NET, mean="104, 117,123", scale=0.017)
    want = (plain - np.array([104, 117, 123], np.float32)[:, None, None]) * np.float32(0.017)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    same = load_input(COFFEE, NET, mean=[104.0, 117.0, 123.0], scale=0.017)
    np.testing.assert_array_equal(same, got)
    assert abs(float(load_input(COFFEE, NET, scale=2.0).max()) - 2 * float(plain.max())) < 1e-3


def test_larger_mean_image_is_center_cropped_smaller_one_resized(tmp_path):
    plain = load_input(CHELSEA, NET)
    big = np.random.default_rng(0).uniform(90, 130, size=(1, 3, 256, 256)).astype(np.float32)
    write_mean(tmp_path / "big.binaryproto", big)
    got = load_input(CHELSEA, NET, mean=tmp_path / "big.binaryproto")
    np.testing.assert_allclose(got, plain - big[:, :, 16:240, 16:240], atol=1e-4)
    small = np.broadcast_to(np.array([1.0, 2.0, 3.0])[:, None, None], (3, 8, 8))
    write_mean(tmp_path / "small.binaryproto", small)
    got = load_input(CHELSEA, NET, mean=tmp_path / "small.binaryproto")
    np.testing.assert_allclose(got, plain - np.array([1, 2, 3])[None, :, None, None], atol=1e-4)


def test_mean_errors(tmp_path):
    with pytest.raises(ConverterError, match="expected 3 comma-separated values"):
        load_input(CHELSEA, NET, mean="104,117")
    with pytest.raises(ConverterError, match="no such mean file"):
        load_input(CHELSEA, NET, mean=tmp_path / "missing.binaryproto")
    write_mean(tmp_path / "gray.binaryproto", np.zeros((1, 1, 224, 224)))
    with pytest.raises(ConverterError, match=r"mean image of shape \(1, 224, 224\)"):
        load_input(CHELSEA, NET, mean=tmp_path / "gray.binaryproto")
