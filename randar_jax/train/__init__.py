"""Training at scale for any generator family (RandAR, RAR): one loop, recipes as configs.

optim.py          OptimConfig (RandAR / RAR recipes as field values), lr schedules from the global step,
                  AdamW with the model's decay mask, torch-style clipping, the skip rule, EMA
train.py          Trainer: sharded TrainState created directly on its devices, jitted train / eval steps
checkpointing.py  Orbax CheckpointManager: params, opt_state, data iterator, configs; async, keep-last-K +
                  milestones, resume from the newest readable step, resharding restore
metrics.py        progress bar, metrics.jsonl, TensorBoard events, loss.png, FLOPs / MFU
samples.py        sample grids during training (process 0)
loop.py           train(config, workdir): the straight-line trainer behind launch/train.py

python launch/train.py --config configs/randar.py:runlocal --workdir /tmp/randar_local
"""
