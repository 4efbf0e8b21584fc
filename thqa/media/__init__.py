"""Reading talking-head files: probing, exact decoding of the chosen seconds (pictures and sound), clip sampling.

One module per job: :mod:`~thqa.media.probe` (checks, opening, stream facts), :mod:`~thqa.media.video` (the exact
video passes), :mod:`~thqa.media.sound` (the sound, resampled on fixed grids), :mod:`~thqa.media.clips` (the readers
:func:`read_clips`, :func:`read_audio`), :mod:`~thqa.media.sampling` (which seconds a file's clips start at);
:mod:`~thqa.media.decode` re-exports the decoding names. Every media module logs under ``thqa.media``.
"""
