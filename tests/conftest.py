"""Shared test helpers: a tiny reference model with a batch of mazes, and single-threaded torch."""

from __future__ import annotations

import pytest
import torch

from steplens.models.dit import ReferenceDenoiser, random_tiny
from steplens.runner import prepare
from steplens.tasks import get_task


def tiny_reference(seeds=(1, 2)):
    """The reference DiT (tiny preset, random weights that do real work) and a batch of 3x3 mazes."""
    den = ReferenceDenoiser(random_tiny(seed=0).eval())
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


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only with STEPLENS_GPU=1 (deselected, not skipped, elsewhere)."""
    import os

    if os.environ.get("STEPLENS_GPU") == "1":
        return
    keep = [i for i in items if i.get_closest_marker("gpu") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("gpu") is not None])
        items[:] = keep


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`steplens demo --quick` run once for the session: (its folder, the CLI's exit code and output).

    STEPLENS_TEST_DEMO=DIR runs it into DIR instead, which resumes whatever an earlier run left there."""
    import os
    from pathlib import Path

    from typer.testing import CliRunner

    from steplens.cli import app

    out = Path(os.environ["STEPLENS_TEST_DEMO"]) if os.environ.get("STEPLENS_TEST_DEMO") else tmp_path_factory.mktemp("quick_demo")
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    return out, r.exit_code, r.output
