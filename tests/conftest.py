"""Shared test helpers: a tiny reference model with a batch of mazes, and single-threaded torch."""

from __future__ import annotations

import pytest
import torch

from steplens.models.dit import ReferenceDenoiser, random_tiny
from steplens.runner import prepare
from steplens.tasks import get_task


def tiny_reference(seeds=(1, 2), precision="fp32"):
    """The reference DiT (tiny preset, random weights that do real work) in `precision`, and a batch of 3x3 mazes."""
    den = ReferenceDenoiser(random_tiny(seed=0).eval()).to_precision(precision)
    task = get_task("maze")
    return den, prepare(den, task, [task.generate(s, 3, n_frames=4, cell_px=1) for s in seeds])


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test or a module (`pytestmark = pytest.mark.usefixtures("one_thread")`), restored after.

    Tiny models gain nothing from threads, and spinning threads stall when the two cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
