"""The three feature extractors, each usable on its own.

* :mod:`thqa.features.spatial` - ECA + Swin-T on each clip's first frame: (n_clips, 768).
* :mod:`thqa.features.temporal` - frozen SlowFast R50 on each whole clip: (n_clips, 2304).
* :mod:`thqa.features.audio` - chroma, CQT, MFCC, GFCC of each clip's second: (n_clips, 4, 128, 32).
"""
