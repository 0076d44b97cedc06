"""ONNX export of the face predicate, verified with onnxruntime."""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

from neural.face import FaceEmotionConfig, FaceEmotionNet
from neural.facetrain.backbones import TimmFaceConfig, TimmFaceNet
from neural.onnx_export import OnnxExportError, export_onnx
from neural.registry import save_network


@pytest.fixture
def face_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = FaceEmotionNet(FaceEmotionConfig())
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_network(net.eval(), tmp_path / "ckpt")
    return tmp_path / "ckpt", net


def test_round_trip_matches_torch_on_random_inputs(face_checkpoint, tmp_path):
    directory, net = face_checkpoint
    report = export_onnx(net, tmp_path / "face.onnx")
    assert report.max_abs_diff <= 1e-4 and report.path.is_file()
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 1, 64, 64) * 2 - 1  # another batch size than at export: the axis is dynamic
    got = session.run(None, {"faces": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (5, 7) and abs(got - want).max() <= 1e-4


def test_timm_face_net_exports_with_resize_inside(tmp_path):
    torch.manual_seed(0)
    net = TimmFaceNet(TimmFaceConfig(model_name="resnet18", img_size=32, head_hidden=16)).eval()
    assert export_onnx(net, tmp_path / "timm.onnx", n_check=4).max_abs_diff <= 1e-4


def test_cli_prints_the_difference_and_fails_in_one_line(face_checkpoint, tmp_path, capsys, monkeypatch):
    from experiments.cli import main

    directory, _ = face_checkpoint
    assert main(["export-onnx", str(directory), "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "max abs difference of probabilities" in out and (tmp_path / "m.onnx").is_file()

    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX is not supported")

    monkeypatch.setattr(torch.onnx, "export", broken)
    assert main(["export-onnx", str(directory), "--out", str(tmp_path / "n.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ONNX export failed" in err and "aten::weird" in err
    assert not (tmp_path / "n.onnx").exists() and not list(tmp_path.glob(".n.onnx*"))


def test_tolerance_is_enforced(face_checkpoint, tmp_path):
    _, net = face_checkpoint
    with pytest.raises(OnnxExportError, match="tolerance"):
        export_onnx(net, tmp_path / "strict.onnx", tolerance=-1.0)
