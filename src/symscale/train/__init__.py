"""One training run as the study does it (see `symscale.train.loop`).

Modules: loop (`train_run`: the loop only, holding the run directory's lock; `model_options` builds every
model of a run), tune (learning-rate search under muP), loss (the study's loss), optim (schedule-free AdamW,
muP groups, averaged weights), compute (measured FLOPs and device time; kappa and H themselves are
`symscale.quantities`), checkpoint (atomic save, weights-only load), symmetry (augmentation, symmetry loss),
evaluation (validation metrics, schedule), progress (bar, log, optional loggers). A run's data comes from
`symscale.data.prefix`; its directory (layout, status, metrics log, lock) belongs to `symscale.rundir`.
"""
