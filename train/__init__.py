"""edgekd's workstation side: data, teacher, students, distillation, export.

Needs the `train` extra (torch, transformers). `edgekd_train.data.clips`, `corpora`,
`split`, `audio` and `pack` work without torch, so corpora can be listed,
split and packed on a machine that has none.
"""
