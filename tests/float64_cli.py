"""`python tests/float64_cli.py ARGS`: the edgerobust CLI with float64 as torch's default dtype.

Models are then built, loaded and trained in float64 (batches follow the model's dtype), so two runs that differ
only in summation order (DDP's gradient all-reduce against one process) agree to float64 rounding, a bound that
holds on any machine; in float32 their agreement would depend on the CPU.
"""
import torch

torch.set_default_dtype(torch.float64)

from edgerobust.cli import main  # noqa: E402  (after the dtype is set)

main()
