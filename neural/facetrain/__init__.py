"""Training the face emotion recogniser: the transfer-learning recipe of seed 002.

Public API::

    from neural.facetrain import FaceTrainConfig, train_face, load_face_predicate
    from pipelines.face_crops import load_face_data, export_synthetic_face_crops

    data = load_face_data("faces/")                   # root/<split>/<emotion>/*.png or a CSV
    result = train_face(FaceTrainConfig(backbone="mini_xception", epochs=10), data, "runs/face")
    net = load_face_predicate("runs/face")            # [B, 1, 64, 64] in [-1, 1] -> [B, 7]

Modules: :mod:`.config` (the dataclass), :mod:`.backbones` (backbone registry,
timm network, predicate loader), :mod:`.recipe` (EMA, MixUp/CutMix, schedule,
class weights), :mod:`.trainer` (the loop), :mod:`.checkpoint`, :mod:`.plots`.
"""
from neural.facetrain.backbones import (
    BackboneError,
    TimmFaceNet,
    backbone_spec,
    build_face_model,
    list_backbones,
    load_face_predicate,
    register_timm_backbone,
    split_parameters,
)
from neural.facetrain.config import FaceTrainConfig, FaceTrainConfigError
from neural.facetrain.checkpoint import read_checkpoint_info
from neural.facetrain.trainer import TrainResult, evaluate, train_face

__all__ = [
    "BackboneError", "FaceTrainConfig", "FaceTrainConfigError", "TimmFaceNet", "TrainResult",
    "backbone_spec", "build_face_model", "evaluate", "list_backbones", "load_face_predicate",
    "read_checkpoint_info", "register_timm_backbone", "split_parameters", "train_face",
]
