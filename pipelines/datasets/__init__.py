"""Data sets: samples with stable ids, a registry, and the built-in loaders.

    from pipelines.datasets import get_dataset
    ds = get_dataset("synthetic", root="data/synth", n_images=2400)
    ds = get_dataset("findingemo", images="~/FindingEmo")
    ds = get_dataset("csv", path="my_set/labels.csv", mapping="emoset_to_basic")
    ds = get_dataset("meld", root="~/MELD.Raw")          # video clips (modality "clip")
    ds = get_dataset("synthetic_clips", n_clips=600)     # generated clips in MELD's layout
    print(ds.describe())
"""
from pipelines.datasets.base import (
    Dataset,
    DatasetError,
    Sample,
    dataset_options,
    get_dataset,
    list_datasets,
    load_mapping,
    register_dataset,
)
from pipelines.datasets.afewva import load_afewva  # noqa: F401  (registers "afewva")
from pipelines.datasets.csv_dataset import csv_dataset
from pipelines.datasets.findingemo import download_command as findingemo_download_command
from pipelines.datasets.findingemo import findingemo_dataset
from pipelines.datasets.meld import MeldDataset, meld_dataset
from pipelines.datasets.synthetic_clips import synthetic_clips_dataset
from pipelines.datasets.synthetic import ensure_synthetic, generate_synthetic, load_synthetic_dir
from pipelines.datasets.synthetic_config import DEFAULT_SOURCE_TABLE, SyntheticConfig

__all__ = [
    "DEFAULT_SOURCE_TABLE",
    "Dataset",
    "DatasetError",
    "Sample",
    "SyntheticConfig",
    "dataset_options",
    "ensure_synthetic",
    "csv_dataset",
    "findingemo_dataset",
    "findingemo_download_command",
    "generate_synthetic",
    "get_dataset",
    "list_datasets",
    "load_mapping",
    "load_synthetic_dir",
    "meld_dataset",
    "synthetic_clips_dataset",
    "MeldDataset",
    "register_dataset",
]
