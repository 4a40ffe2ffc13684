"""Shared fixtures: small data made on the fly, never downloaded."""

from __future__ import annotations

import pytest
import torch

from symscale.data.toy import toy_structures


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    # the suite runs on 2 cores; one torch thread per test process keeps timings sane
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_set():
    """40 small Morse-labelled molecules of 3-12 atoms (H, C, N, O)."""
    return toy_structures(40, seed=0)


@pytest.fixture(autouse=True, scope="session")
def _index_cache(tmp_path_factory):
    # dataset indexes of the tests' files go to a folder of this session, not the user's cache (an environment
    # variable, so that spawned loader workers find them too)
    import os

    old = os.environ.get("SYMSCALE_INDEX_CACHE")
    os.environ["SYMSCALE_INDEX_CACHE"] = str(tmp_path_factory.mktemp("index-cache"))
    yield
    if old is None:
        os.environ.pop("SYMSCALE_INDEX_CACHE", None)
    else:
        os.environ["SYMSCALE_INDEX_CACHE"] = old
