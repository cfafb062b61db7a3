"""Training at scale for any generator family (RandAR, RAR): one loop, recipes as configs.

optim.py          OptimConfig (RandAR / RAR recipes as field values), lr schedules from the global step,
                  AdamW with the model's decay mask, torch-style clipping, the skip rule, EMA
train.py          Trainer: sharded TrainState created directly on its devices, jitted train / eval steps
checkpointing.py  Orbax CheckpointManager: params, opt_state, data iterator, configs; async, keep-last-K +
                  milestones, resume from the newest readable step, resharding restore
metrics.py        progress bar, metrics.jsonl, TensorBoard events, loss.png, FLOPs / MFU
samples.py        sample grids during training (process 0)
loop.py           train(config, workdir): the straight-line trainer
main.py           the command line: randar-jax train, python -m randar_jax.train (multi-process set-up)

randar-jax train --config randar:runlocal --workdir /tmp/randar_local
"""
