"""From a file to per-clip features.

The extractors, each usable on its own:

* :mod:`thqa.features.spatial` - ECA + Swin-T on each clip's first frame: (n_clips, 768).
* :mod:`thqa.features.temporal` - frozen SlowFast R50 on each whole clip: (n_clips, 2304).
* :mod:`thqa.features.audio` - chroma, CQT, MFCC, GFCC of each clip's second: (n_clips, 4, 128, 32).

The backbones and their weights:

* :mod:`thqa.features.registry` - the backbone table (name, slot, width, weights, variable, flag, code version);
  imports no torch. A new backbone is one entry and its own module, as :mod:`thqa.features.swin` (Swin-T's weights and
  builder) and :mod:`thqa.features.slowfast` (SlowFast's) are.
* :mod:`thqa.features.weights` - what every backbone's weights share (options, identity, safe loading, seeding).
* :mod:`thqa.features.digests` - the backbones' weight digests, remembered.

Extraction (:mod:`thqa.features.pipeline` re-exports the public names of all five):

* :mod:`thqa.features.settings` - extraction settings, features version, provenance, precision and device.
* :mod:`thqa.features.prepare` - stage 1, CPU: decode the sampled clips, audio features, backbone inputs.
* :mod:`thqa.features.runner` - stage 2: the backbones batched over clips of many files.
* :mod:`thqa.features.workers` - the decoding worker processes.
* :mod:`thqa.features.extractor` - :class:`~thqa.features.extractor.FeatureExtractor`, which joins the stages.
"""
