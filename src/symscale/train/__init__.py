"""One training run as the study does it (see `symscale.train.loop`).

Modules: loop (train_run), loss (the study's loss), optim (schedule-free AdamW, muP groups, averaged weights),
compute (FLOPs, kappa, device time), checkpoint (atomic save, weights-only load), symmetry (augmentation,
symmetry loss), evaluation (validation metrics, schedule), progress (bar, log, optional loggers).
"""
