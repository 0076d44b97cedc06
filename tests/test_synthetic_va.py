"""The synthetic benchmark's V/A source: the mood latent, its rendered cue, and the truth it writes."""
from __future__ import annotations

import io
import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from neural.va import AROUSAL_BINS, VALENCE_BINS
from neural.common import EMOTIONS
from pipelines.datasets.synthetic import _draw_latent, generate_synthetic, render_image
from pipelines.datasets.synthetic_config import SyntheticConfig
from pipelines.datasets.synthetic_va import (
    BIN_EDGES,
    VA_CENTRES,
    bin_probabilities,
    circumplex_error,
    circumplex_table,
)


def _bin(x: float, names) -> str:
    return names[sum(x > e for e in BIN_EDGES)]


@pytest.fixture(scope="module")
def latents():
    cfg = SyntheticConfig(n_images=4000)
    return [_draw_latent(i, cfg) for i in range(cfg.n_images)]


def test_mood_decides_the_label_when_the_va_source_is_drawn(latents):
    va = [lat for lat in latents if lat["true_source"] == "va"]
    assert 0.15 < len(va) / len(latents) < 0.25
    assert all(lat["label"] == lat["va_emotion"] for lat in va)
    # valence/arousal scatter around the mood's circumplex centre with sd va_noise (clipping aside)
    resid = np.array([[lat["valence"] - VA_CENTRES[lat["va_emotion"]][0],
                       lat["arousal"] - VA_CENTRES[lat["va_emotion"]][1]] for lat in latents])
    assert np.abs(resid.mean(0)).max() < 0.02 and 0.12 < resid.std(0).min() and resid.std(0).max() < 0.16
    # the mood is independent of the scene's emotion
    agree = np.mean([lat["va_emotion"] == lat["scene_emotion"] for lat in latents])
    assert abs(agree - 1 / len(EMOTIONS)) < 0.03


def test_the_circumplex_table_is_the_moods_posterior_given_the_bins(latents):
    truth = circumplex_table(0.15)
    weights = bin_probabilities(0.15)
    counts: dict = defaultdict(Counter)
    for lat in latents:
        counts[(_bin(lat["valence"], VALENCE_BINS), _bin(lat["arousal"], AROUSAL_BINS))][lat["va_emotion"]] += 1
    for (v, a), c in counts.items():
        n = sum(c.values())
        assert n / len(latents) == pytest.approx(weights[v][a], abs=0.02)
        if n >= 150:
            for e in EMOTIONS:
                assert c[e] / n == pytest.approx(truth[v][a][e], abs=4 * np.sqrt(0.25 / n)), (v, a, e)
    for row in truth.values():
        for dist in row.values():
            assert sum(dist.values()) == pytest.approx(1.0)
    assert sum(w for row in weights.values() for w in row.values()) == pytest.approx(1.0)


def test_circumplex_error():
    truth = circumplex_table(0.15)
    assert circumplex_error(truth, truth, bin_probabilities(0.15)) == {"mae": 0.0, "max": 0.0, "weighted_mae": 0.0}
    uniform = {v: {a: {e: 1 / 7 for e in EMOTIONS} for a in row} for v, row in truth.items()}
    err = circumplex_error(uniform, truth, bin_probabilities(0.15))
    assert 0.1 < err["mae"] < 0.3 and err["max"] > 0.8 and err["weighted_mae"] > 0.1


def _render(lat, valence, arousal, cfg, index):
    lat = {**lat, "valence": valence, "arousal": arousal}
    return np.asarray(Image.open(io.BytesIO(render_image(lat, index, "train", cfg))), dtype=float)


def test_the_mood_is_rendered_in_the_scene_and_not_in_the_faces():
    cfg = SyntheticConfig(n_images=20, image_size=96)
    index = next(i for i in range(20) if len(_draw_latent(i, cfg)["boxes"]) == 1)
    lat = _draw_latent(index, cfg)
    x1, y1, x2, y2 = lat["boxes"][0]
    outside = np.ones((96, 96), bool)
    outside[max(0, y1 - 4):y2 + 4, max(0, x1 - 4):x2 + 4] = False
    core = np.zeros((96, 96), bool)
    w, h = x2 - x1, y2 - y1
    core[y1 + h // 4:y2 - h // 4, x1 + w // 4:x2 - w // 4] = True

    warm, cool = _render(lat, 0.8, 0.0, cfg, index), _render(lat, -0.8, 0.0, cfg, index)
    warmth = lambda img: (img[..., 0] - img[..., 2])[outside].mean()  # noqa: E731
    assert warmth(warm) > warmth(cool) + 20
    vivid, dull = _render(lat, 0.0, 0.8, cfg, index), _render(lat, 0.0, -0.8, cfg, index)
    assert vivid[outside].mean() > dull[outside].mean() + 15  # brighter
    assert vivid.std(axis=2)[outside].mean() > 1.5 * dull.std(axis=2)[outside].mean()  # more saturated
    # the face FER2013 reads is drawn after the tint: its core does not change
    assert np.abs(warm - cool)[core].mean() < 0.1 * np.abs(warm - cool)[outside].mean()


def test_truth_json_holds_the_tables_and_every_images_values(tmp_path):
    cfg = SyntheticConfig(n_images=30, image_size=64, seed=3)
    root = generate_synthetic(tmp_path / "set", cfg, workers=1)
    truth = json.loads((root / "truth.json").read_text())
    assert truth["circumplex"] == json.loads(json.dumps(circumplex_table(cfg.va_noise)))
    assert truth["source_table"] == cfg.source_table and truth["va_noise"] == cfg.va_noise
    records = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]
    assert len(truth["va"]) == 30
    for rec in records:
        t = truth["va"][rec["sample_id"]]
        assert (t["valence"], t["arousal"], t["va_emotion"]) == (rec["valence"], rec["arousal"], rec["va_emotion"])
