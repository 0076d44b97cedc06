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

#: Names re-exported from the loaders' modules, imported at first use (see base.BUILTIN_LOADERS).
_LAZY = {
    "load_afewva": ("afewva", "load_afewva"),
    "csv_dataset": ("csv_dataset", "csv_dataset"),
    "findingemo_download_command": ("findingemo", "download_command"),
    "findingemo_dataset": ("findingemo", "findingemo_dataset"),
    "MeldDataset": ("meld", "MeldDataset"),
    "meld_dataset": ("meld", "meld_dataset"),
    "synthetic_clips_dataset": ("synthetic_clips", "synthetic_clips_dataset"),
    "ensure_synthetic": ("synthetic", "ensure_synthetic"),
    "generate_synthetic": ("synthetic", "generate_synthetic"),
    "load_synthetic_dir": ("synthetic", "load_synthetic_dir"),
    "DEFAULT_SOURCE_TABLE": ("synthetic_config", "DEFAULT_SOURCE_TABLE"),
    "SyntheticConfig": ("synthetic_config", "SyntheticConfig"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


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
