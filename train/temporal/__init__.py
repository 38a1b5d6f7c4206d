"""Temporal knowledge distillation: *when* the teacher listens, taught to the student.

- `rollout`: the teacher's self-attention of every layer, heads averaged, layers combined by
  attention rollout with the residual identity, reduced to one weight per frame.
- `interpolate`: a per-frame weight vector resampled to another number of frames, keeping mass.
- `query`: a learnable query over a student's feature map (training only, never exported), and
  `temporal_weights(model, wave)` that picks a student's own attention or the query's.
- `loss`: `TemporalAttention(lam)`, the loss term lambda x KL(teacher weights || student weights),
  which the training loop (`edgekd_train.distill.loop.distill`) adds to Hinton's term.

docs/temporal.md explains the choices.
"""
