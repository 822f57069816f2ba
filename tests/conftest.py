import os

import pytest
import torch
from arm64_testbed import arm64_host, arm64_testbed  # noqa: F401  (session fixtures: one test bed per session)

os.environ.setdefault("EDGEROBUST_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small trained digits model shared by tests that only read it."""
    from edgerobust.training import TrainConfig
    from edgerobust.training.api import train_model

    out = tmp_path_factory.mktemp("runs") / "digits"
    return train_model(out, "scnn2:8-16", "digits", TrainConfig(epochs=4, batch_size=64, lr=0.05, augment=False),
                       progress=False)
