"""Shared test fixtures (keep each one minimal)."""
from __future__ import annotations

import os

import pytest
import torch

# Keras (test-only, for the mini-XCEPTION cross-check) runs on its torch backend.
os.environ.setdefault("KERAS_BACKEND", "torch")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers with two threads each on two
    # cores oversubscribe the CPU and run many times slower
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A 24-image synthetic data set (128 px, all four splits) generated once per session."""
    from pipelines.datasets import get_dataset

    return get_dataset("synthetic", root=tmp_path_factory.mktemp("synthetic_small"), n_images=24, seed=0)


@pytest.fixture
def float64():
    """Run the test with float64 as torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny CLIP saved with save_pretrained, so tests load it through the real from_pretrained path."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=24,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(path)
    # a real CLIP directory also holds its image processor (what the cache's CLIPImageEmbeddings loads)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_photos(tmp_path_factory):
    """Real photos shipped by scikit-image, written as files: {name: path}.

    astronaut: one large smiling face (RGB JPEG); camera: a man with a camera,
    grayscale PNG; cat: Chelsea the cat (RGB JPEG, no human face).
    """
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("real_photos")
    paths = {}
    for name, array, suffix in (("astronaut", data.astronaut(), ".jpg"), ("camera", data.camera(), ".png"),
                                ("cat", data.chelsea(), ".jpg")):
        path = root / f"{name}{suffix}"
        Image.fromarray(array).save(path, quality=95) if suffix == ".jpg" else Image.fromarray(array).save(path)
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def astronaut_face(real_photos):
    """The astronaut's face as the pipeline crops it: MTCNN box -> [1, 1, 64, 64] in [-1, 1]."""
    from pipelines.faces import MTCNNFaces, crop_faces
    from pipelines.images import load_image

    image = load_image(real_photos["astronaut"])
    faces = MTCNNFaces().detect([image])[0]
    assert len(faces) == 1, "MTCNN should find the astronaut's one face"
    crop = crop_faces(image, faces.boxes)  # uint8 [1, 64, 64]
    return torch.from_numpy(crop).float().div(127.5).sub(1.0).unsqueeze(1)
