"""Corpora, splits, decoding, augmentation and datasets for training.

Modules, one concern each:
- `clips`: the `Clip` record every loader returns.
- `corpora`: `load_corpus(name, root, **opts)` for each supported layout.
- `split`: group-disjoint splits written next to the results.
- `audio`: decode any file to float32 mono at a rate; crop or pad.
- `augment`: background noise at a range of SNRs, gain, time shift.
- `dataset`: a torch `Dataset` over decoded clips (imports torch).
- `pack`: a compact copy of a clip list for a remote GPU machine.
- `synth`: synthetic keyword clips from espeak-ng and flite.
"""
