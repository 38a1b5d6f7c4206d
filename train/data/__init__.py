"""Corpora, splits, decoding, augmentation and datasets for training.

Modules, one concern each:
- `clips`: the `Clip` record every loader returns.
- `corpora`: `load_corpus(name, root, **opts)`, the one entry point; the layouts
  live in `emotion_corpora`, `cough_corpora` and `generic_corpora`, their shared
  error and skip accounting in `corpus_base`.
- `split`: group-disjoint splits written next to the results.
- `audio`: decode any file to float32 mono at a rate; crop or pad.
- `trim`: where the sound is in a clip (leading/trailing silence).
- `augment`: background noise at a range of SNRs, gain, time shift.
- `dataset`: a torch `Dataset` over decoded clips (the only module that needs torch).
- `pack`: a compact Opus copy of a clip list for a remote GPU machine.
- `synth`: synthetic keyword clips from espeak-ng and flite.
"""
