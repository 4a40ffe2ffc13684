"""Data layer: structures and graph batches, readers, packing, splits, statistics, loaders, the built-in set.

Modules: graph (Structure, GraphBatch, radius graph), readers (open_dataset over extxyz, ASE .db, .aselmdb;
writers), splits (validation set of whole molecules, nested prefixes), stats (element energies, force RMS),
packed (in-RAM arrays with stored neighbour lists), loader (batches, background collation), builtin,
generate, molecules, dynamics and xtb (the built-in GFN2-xTB set: seed molecules, MD snapshots, labels),
toy (a Morse-labelled set for tests), prefix (resolving a run's data: open the source, hold out the validation
set, take the nested training prefix).

Import the submodules directly (`from symscale.data.readers import open_dataset`); this package imports
nothing heavy so that generation worker processes start quickly.
"""
