"""Data layer: structures and graph batches, readers, packing, splits, statistics, loaders, the built-in set.

Import the submodules directly (`from symscale.data.readers import open_dataset`); this package imports
nothing heavy so that generation worker processes start quickly.
"""
