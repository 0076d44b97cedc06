"""Every registered network builds; unknown names and keys list the known ones."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from neural.common import UserError
from neural.multimodal import packaged_minilm_path
from neural.registry import get_network, list_networks

EXPECTED = {"scene_backbone", "scene2emotion", "face_emotion", "va_regressor", "va_valence", "va_arousal",
            "multimodal_fusion", "late_fusion"}

# networks whose defaults need weights these machines cannot download
TEST_CONFIGS = {"multimodal_fusion": lambda: {"text_model": str(packaged_minilm_path())}}


def test_all_networks_registered():
    assert EXPECTED <= set(list_networks())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builds_with_defaults(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_network(name, **TEST_CONFIGS.get(name, dict)())
    assert isinstance(net, torch.nn.Module)
    assert dataclasses.is_dataclass(net.config)
    assert net.registry_name == name
    assert hasattr(net, "param_groups")


def test_unknown_name_lists_known_ones():
    with pytest.raises(UserError) as info:
        get_network("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in EXPECTED:
        assert name in message


def test_unknown_config_key_lists_known_keys():
    with pytest.raises(TypeError, match="hidden"):
        get_network("scene2emotion", hiden=3)
