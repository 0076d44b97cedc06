"""Temporal valence/arousal on AFEW-VA (source 001): Path B on cached features, Path A end to end.

    from experiments.tools.temporal_va.config import TemporalVAConfig
    from experiments.tools.temporal_va.run import run

    cfg = TemporalVAConfig(data="data/afewva", out="runs/va", path="B")
    results = run(cfg)            # extract -> train -> evaluate; returns evaluation_results

Path B: every frame goes once through the frame backbone (CLIP when available,
the scene backbone otherwise) into the verified tensor cache (``cache.build``:
manifest, sha256 per shard and per frame, resume, atomic writes) plus an
``index.json`` of clips -> frame ids; a :class:`~neural.temporal_va.TemporalVAHead`
is trained on the cached features.

Path A: :class:`~neural.temporal_va.TemporalCLIPVA` (CLIP + LoRA + temporal head).
Stage 1 (``pretrain``) is contrastive: the two views of a clip are two
independent temporal samplings of it (different frames of each segment) with
independent augmentations (crop, flip, brightness/contrast); the other clips of
the batch are the negatives (symmetric InfoNCE). Stage 2 (``finetune``)
starts from the stage-1 checkpoint and trains the regression heads and the LoRA
adapters on valence/arousal.

Temporal sampling (TSN-style): a clip is cut into ``num_frames`` equal segments
and one frame is drawn per segment (random in training, the centre for
validation); evaluation covers every frame with shifted samplings and averages.
Loss: MSE + ``ccc_weight`` x mean(1 - CCC) over the two dimensions.

Layout of ``out``::

    config.json                     resolved config + command
    cache/<split>/..., cache/index.json   Path B frame features
    checkpoints/<stage>/{last,best}/      stage = pathB | pretrain | finetune
    history_<stage>.json
    evaluation/evaluation_results.json, predictions.csv (per frame), clips.csv (per clip), trajectories.png

Training resumes from ``checkpoints/<stage>/last`` when it exists (same config
apart from epochs and evaluation options; otherwise it refuses). Seeded: the
same config gives the same numbers, resumed or not.

Modules: :mod:`~.config` (the config), :mod:`~.inputs` (temporal sampling,
model inputs, the Path B feature cache), :mod:`~.train` (losses, the training
loop), :mod:`~.evaluate` (prediction over every frame, metrics, CSVs, plots),
:mod:`~.run` (the Path A model and the driver). ``emologic va-temporal`` is the
command.
"""
