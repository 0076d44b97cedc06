"""The clip pipeline: decode (PyAV), frames, log-mel, tokens; each bad input a reported skip."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from clip_helpers import level, write_clip

from neural.common import UserError
from pipelines.clip_decode import ClipDecoder, LogMel
from pipelines.clips import ClipPipeline, ClipPipelineConfig, ClipPipelineConfigError
from pipelines.datasets import Sample

SMALL = ClipPipelineConfig(frames=4, frame_size=16, max_seconds=2.0, max_tokens=16, batch_size=4)


@pytest.fixture(scope="module")
def pipe():
    return ClipPipeline(SMALL, workers=1)


def clip_sample(sid, path, text="We were on a break!", label=3, sentiment=0):
    return Sample(sid, path, label, None, {"utterance": text, "sentiment": sentiment})


def test_default_shapes_16x112x112_and_64_mel_bands(tmp_path):
    cfg = ClipPipelineConfig()
    assert (cfg.frames, cfg.frame_size, cfg.n_mels, cfg.sample_rate) == (16, 112, 64, 16000)
    path = write_clip(tmp_path / "a.mp4", n_frames=20, fps=10)
    (p,), skips = ClipPipeline(cfg, workers=1).process([clip_sample("a", path)])
    assert not skips
    assert p.video.shape == (16, 3, 112, 112) and p.video.dtype == np.uint8
    assert p.audio.shape == (64, cfg.audio_frames) == (64, 1 + 160000 // 512) and p.audio.dtype == np.float32
    assert p.input_ids.shape == p.attention_mask.shape == (64,) and p.input_ids.dtype == np.int64
    assert p.audio_present and p.audio_frames == 1 + int(p.info["audio_seconds"] * 16000) // 512
    assert p.label == 3 and p.sentiment == 0 and p.annotations["utterance"] == "We were on a break!"
    assert p.info["n_frames_decoded"] == 20 and p.info["fps"] == 10.0 and p.info["video_size"] == [32, 32]


def test_frames_are_picked_uniformly_over_the_clip(tmp_path, pipe):
    path = write_clip(tmp_path / "a.mp4", n_frames=8)
    (p,), _ = pipe.process([clip_sample("a", path)])
    picked = np.linspace(0, 7, 4).round().astype(int)  # [0, 2, 5, 7]
    means = p.video.reshape(4, -1).mean(axis=1)
    assert np.allclose(means, [level(i) for i in picked], atol=6)
    # fewer frames than T: frames repeat, none is invented
    short = write_clip(tmp_path / "short.mp4", n_frames=2)
    (q,), _ = pipe.process([clip_sample("s", short)])
    assert np.allclose(q.video.reshape(4, -1).mean(axis=1), [level(0), level(0), level(1), level(1)], atol=6)


def test_log_mel_uses_library_filterbank_and_finds_the_tone(tmp_path):
    from transformers.audio_utils import mel_filter_bank

    cfg = ClipPipelineConfig(max_seconds=1.0)
    sr = cfg.sample_rate
    t = np.arange(sr) / sr
    mel = LogMel(cfg)(np.sin(2 * np.pi * 1000 * t).astype(np.float32))  # [64, L]
    assert mel.shape == (64, cfg.audio_frames)
    fb = mel_filter_bank(cfg.n_fft // 2 + 1, 64, 0.0, sr / 2, sr, norm=None, mel_scale="htk")  # [F, 64]
    assert int(mel[:, 5:-5].mean(axis=1).argmax()) == int(fb[round(1000 * cfg.n_fft / sr)].argmax())
    silence = LogMel(cfg)(np.zeros(sr, np.float32))
    assert np.allclose(silence, np.log(cfg.log_floor))


def test_long_clip_is_capped_at_max_seconds(tmp_path, pipe):
    path = write_clip(tmp_path / "long.mp4", n_frames=40, fps=8)  # 5 s
    (p,), _ = pipe.process([clip_sample("l", path)])
    assert p.info["n_frames_decoded"] == 16  # 2 s at 8 fps
    assert p.audio.shape == (64, 1 + 32000 // 512) and p.audio_frames == 1 + 32000 // 512


def test_each_bad_input_is_a_skip_with_its_reason(tmp_path, pipe):
    good = write_clip(tmp_path / "good.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3][::-1])
    text = tmp_path / "text.mp4"
    text.write_text("not a video at all\n" * 20)
    audio_only = tmp_path / "audio_only.m4a"
    _write_audio_only(audio_only)
    samples = [
        clip_sample("ok", good),
        clip_sample("missing", tmp_path / "nope.mp4"),
        clip_sample("empty", empty),
        clip_sample("corrupt", corrupt),
        clip_sample("text", text),
        clip_sample("blank", good, text=" \t "),
        clip_sample("notext", good, text=None),
        clip_sample("audio_only", audio_only),
        clip_sample("badlabel", good, label=9),
        clip_sample("badsentiment", good, sentiment=5),
    ]
    done, skips = pipe.process(samples)
    assert [p.sample_id for p in done] == ["ok"]
    reasons = {s.sample_id: s.reason for s in skips}
    assert [s.sample_id for s in skips] == [s.sample_id for s in samples[1:]]  # input order
    assert reasons["missing"].startswith("clip missing: ")
    assert reasons["empty"].startswith("unreadable clip: ") and "empty (0 bytes)" in reasons["empty"]
    assert reasons["corrupt"].startswith("unreadable clip: ")
    assert reasons["text"].startswith("unreadable clip: ")
    assert reasons["blank"].startswith("empty utterance") and reasons["notext"].startswith("empty utterance")
    assert reasons["audio_only"].startswith("no video stream")
    assert "outside the vocabulary" in reasons["badlabel"] and "sentiment 5 outside" in reasons["badsentiment"]
    assert all("\n" not in r for r in reasons.values())


def _write_audio_only(path):
    import av

    with av.open(str(path), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))


def test_clip_without_audio_is_kept_flagged_or_skipped_by_policy(tmp_path, pipe):
    silent = write_clip(tmp_path / "silent.mp4", audio=False)
    (p,), skips = pipe.process([clip_sample("quiet", silent)])
    assert not skips and not p.audio_present and p.audio is None and p.audio_frames == 0
    assert p.info["audio"] == "no audio stream" and p.video.shape == (4, 3, 16, 16)

    strict = ClipPipeline(ClipPipelineConfig(**{**SMALL.to_dict(), "no_audio": "skip"}), workers=1)
    done, (skip,) = strict.process([clip_sample("quiet", silent)])
    assert not done and skip.reason == "no audio: no audio stream (no_audio=skip)"


def test_tokens_come_from_the_text_models_tokenizer(tmp_path, pipe):
    from transformers import AutoTokenizer

    from neural.multimodal import packaged_minilm_path

    path = write_clip(tmp_path / "a.mp4", n_frames=2)
    long_text = "Could I BE wearing any more clothes? " * 10
    (p, q), _ = pipe.process([clip_sample("a", path), clip_sample("b", path, text=long_text)])
    want = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))("We were on a break!")["input_ids"]
    assert p.input_ids[: len(want)].tolist() == want and p.attention_mask.sum() == len(want)
    assert p.input_ids[len(want):].tolist() == [0] * (16 - len(want))
    assert q.attention_mask.sum() == 16 and q.input_ids[-1] == want[-1]  # truncated, ends with [SEP]
    assert pipe.identity["tokenizer"].startswith("BertTokenizer")


def test_config_validation_and_round_trip():
    cfg = ClipPipelineConfig(frames=8, f_max=7000.0)
    assert ClipPipelineConfig.from_dict(cfg.to_dict()) == cfg
    assert "batch_size" not in cfg.semantic_dict() and "text_model" not in cfg.semantic_dict()
    for bad, text in [({"frames": 0}, "frames must be a positive integer"),
                      ({"win_length": 2048}, "win_length (2048) must be <= n_fft"),
                      ({"f_max": 9000.0}, "f_max <= sample_rate / 2"),
                      ({"no_audio": "zeros"}, "no_audio 'zeros' is not one of keep, skip"),
                      ({"max_seconds": 0}, "max_seconds must be a positive number")]:
        with pytest.raises(ClipPipelineConfigError, match=text.replace("(", r"\(").replace(")", r"\)")):
            ClipPipelineConfig(**bad)
    with pytest.raises(ClipPipelineConfigError, match="unknown clip pipeline config key"):
        ClipPipelineConfig.from_dict({"fps": 3})


def test_missing_pyav_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(UserError, match="pip install av"):
        ClipPipeline(SMALL)


def test_decoding_is_deterministic(tmp_path, pipe):
    path = write_clip(tmp_path / "a.mp4")
    (a,), _ = pipe.process([clip_sample("a", path)])
    (b,), _ = pipe.process([clip_sample("a", path)])
    assert np.array_equal(a.video, b.video) and torch.equal(torch.from_numpy(a.audio), torch.from_numpy(b.audio))


def test_wrong_frame_count_in_the_container_still_gives_the_exact_frames(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "a.mp4", n_frames=8)
    pipe = ClipPipeline(SMALL, workers=1)
    (want,), _ = pipe.process([clip_sample("a", path)])
    assert "decoded_twice" not in want.info  # the container's count was right: one pass

    original = ClipDecoder._demux
    calls = []

    def lying_count(self, container, path, wanted, audio):
        calls.append(wanted)
        return original(self, container, path, {0} if wanted is None else wanted, audio)  # as if it said 1 frame

    monkeypatch.setattr(ClipDecoder, "_demux", lying_count)
    (got,), _ = pipe.process([clip_sample("a", path)])
    assert got.info["decoded_twice"] and calls == [None, {0, 2, 5, 7}]
    assert np.array_equal(got.video, want.video) and np.array_equal(got.audio, want.audio)
