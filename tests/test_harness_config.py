"""The harness config split per track: one place per field, per-track defaults, and the
flags of another track refused in one line (fast: nothing here loads data)."""
from __future__ import annotations

import dataclasses

import pytest

from experiments.harness.config import ClipConfig, HarnessConfig, ImageConfig, SharedConfig, add_arguments
from experiments.regimes import REGIMES, regime_names
from experiments.harness.track import Track, track_class
from experiments.joint_vs_frozen import main as joint_vs_frozen
from neural.common import UserError

IMAGE_ONLY = [["--unfreeze-layer4"], ["--face-weights", "/nonexistent"], ["--scene-weights", "places.pth"],
              ["--net-lr", "0.01"], ["--face-init", "scratch"], ["--va-backbone", "clip"], ["--n-images", "50"]]
CLIP_ONLY = [["--n-clips", "10"], ["--video-weights", "r3d.pth"], ["--clip-frames", "4"], ["--text-model", "bert"]]


@pytest.fixture(autouse=True)
def never_run(monkeypatch):
    """A flag that got through must not start the job (it would build a whole data set)."""
    def ran(*args, **kwargs):
        raise AssertionError("the job ran: the flag was accepted")

    monkeypatch.setattr("experiments.joint_vs_frozen.run", ran)


def _one_line_error(capsys, argv: list[str]) -> str:
    assert joint_vs_frozen(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("flags", IMAGE_ONLY, ids=lambda f: f[0])
def test_an_image_flag_is_refused_for_clip_data_sets(capsys, flags):
    err = _one_line_error(capsys, ["--dataset", "synthetic_clips", *flags])
    assert f"{flags[0]} does not apply to clip data sets (synthetic_clips)" in err


@pytest.mark.parametrize("flags", CLIP_ONLY, ids=lambda f: f[0])
def test_a_clip_flag_is_refused_for_image_data_sets(capsys, flags):
    err = _one_line_error(capsys, ["--dataset", "synthetic", *flags])
    assert f"{flags[0]} does not apply to image data sets (synthetic)" in err


def test_every_foreign_flag_is_named_in_the_one_line(capsys):
    err = _one_line_error(capsys, ["--dataset", "meld", "--root", "/x", "--unfreeze-layer4", "--net-lr", "0.1"])
    assert "--net-lr, --unfreeze-layer4 do not apply to clip data sets (meld)" in err


def test_the_refusal_holds_for_configs_built_in_python_too():
    with pytest.raises(UserError, match="--unfreeze-layer4 does not apply to clip data sets"):
        HarnessConfig(dataset="synthetic_clips", unfreeze_layer4=True).validate()
    HarnessConfig(dataset="synthetic_clips").validate()  # the image fields at their defaults are fine
    HarnessConfig(dataset="synthetic", unfreeze_layer4=True, n_images=10).validate()


def test_every_field_is_documented_once_with_its_track():
    tracks = {SharedConfig: None, ImageConfig: "image", ClipConfig: "clip"}
    names = [f.name for cls in tracks for f in dataclasses.fields(cls)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(HarnessConfig))  # no field in two classes
    for cls, track in tracks.items():
        for f in dataclasses.fields(cls):
            assert f.metadata["help"], f.name
            assert f.metadata["track"] == track, f.name
            if f.metadata["defaults"]:
                assert f.default is None, f"{f.name}: a per-track default needs None as the field's default"


def test_help_is_read_from_the_fields():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help().replace("\n", " ")
    for f in dataclasses.fields(HarnessConfig):
        assert "--" + f.name.replace("_", "-") in text
    assert "(default: image 5, clip 40)" in " ".join(text.split())


def test_per_track_defaults_are_explicit_and_resolved():
    image = HarnessConfig(dataset="synthetic").resolved()
    clips = HarnessConfig(dataset="synthetic_clips").resolved()
    meld = HarnessConfig(dataset="meld", data_root="/x").resolved()
    assert (image.program, image.epochs, image.stage0_epochs, image.rule_init, image.class_weights) == \
        ("context_selection", 5, 2, "uniform", False)
    assert (clips.program, clips.epochs, clips.stage0_epochs, clips.rule_init, clips.class_weights) == \
        ("clip_sentiment", 40, 30, "program", True)
    assert (clips.clip_frames, clips.clip_size, clips.clip_seconds) == (8, 64, 2.0)
    assert (meld.clip_frames, meld.clip_size, meld.clip_seconds) == (16, 112, 10.0)
    assert image.clip_frames is None  # a field of the other track is left alone
    assert HarnessConfig(face_init="scratch").resolved().stage0_epochs == 10
    assert HarnessConfig(epochs=3).resolved().epochs == 3  # a value given wins


def test_regimes_are_registered_once_and_each_declares_its_tracks():
    assert regime_names("image") == ("frozen", "joint", "uniform_rules", "late_fusion")
    assert regime_names("clip") == ("frozen", "joint")
    assert HarnessConfig().resolved().regimes == list(regime_names("image"))
    assert HarnessConfig(dataset="synthetic_clips").resolved().regimes == list(regime_names("clip"))
    with pytest.raises(UserError, match="unknown regime.*late_fusion for clip data sets"):
        HarnessConfig(dataset="synthetic_clips", regimes=["frozen", "late_fusion"]).validate()
    assert all(set(r.tracks) <= {"image", "clip"} for r in REGIMES.values())


def test_each_track_provides_every_step():
    steps = ["load_program", "load", "stage0_key", "load_stage0", "save_stage0", "train_stage0", "run_regime",
             "results"]
    for name in ("image", "clip"):
        cls = track_class(name)
        assert issubclass(cls, Track) and cls.name == name
        missing = [s for s in steps if getattr(cls, s) is getattr(Track, s)]
        assert not missing, f"{name} track lacks {missing}"
