"""`edgerobust certify`: certificates for the exported artifacts, in the arithmetic of the device (certify/api.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..bounds import ARITHMETIC_MODELS
from ..bounds.engine import METHODS
from ..certify.lipschitz import GLOBAL_METHODS
from ..config import parse_number
from ..run import RunDir
from ..run_select import bundle_of
from .common import command, console, split_list
from .defaults import bundle_argument
from .render import table


@command
def certify(
    target: Optional[Path] = typer.Argument(None, help="A run (its latest bundle) or a bundle directory (default: "
                                                        "the current one, else the most recent run's)."),
    eps: str = typer.Option("2/255", "--eps", help="ε in [0,1] pixels, comma-separated: 0.01, 2/255, 1%"),
    method: str = typer.Option("crown", "--method", help=f"Bound method: {', '.join((*METHODS, *GLOBAL_METHODS))}"),
    norm: str = typer.Option("inf", "--norm", help="Ball: inf or 2 (intersected with the [0,1] box)"),
    n: int = typer.Option(16, "--n", min=1, help="Certify the bundle's first N golden inputs."),
    arithmetic: Optional[str] = typer.Option(None, "--arithmetic", help=(
        f"Arithmetic models, comma-separated (default: those declared for the precision): "
        f"{', '.join(ARITHMETIC_MODELS)}")),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 (default: every ONNX model that "
                                                                      "can be certified; int8 is refused)."),
    radius: bool = typer.Option(True, "--radius/--no-radius", help="Per-point largest certified ε by bisection."),
    budget_mb: int = typer.Option(1024, "--budget-mb", min=16, help="Working memory per batch (MiB)."),
    vnnlib: Optional[Path] = typer.Option(None, "--export-vnnlib", help="Also write the fp32 artifact, one VNN-LIB "
                                          "property per point (first ε) and instances.csv here (VNN-COMP layout)."),
) -> None:
    """Certify the bundle's ONNX artifacts on its golden inputs: RUN/certificates.json and a table."""
    from ..certify.api import certify_bundle, check_eps

    values = check_eps([parse_number(v, "--eps") for v in split_list(eps) or []])
    if target is not None and (target / "model.json").is_file():
        run = RunDir.open(target)
        bundle = bundle_of(run)
    else:
        bundle, run = bundle_argument(target), None
    result = certify_bundle(bundle, values, method=method, norm=norm.removeprefix("l"), n=n,
                            arithmetic=split_list(arithmetic), precisions=split_list(precision), radius=radius,
                            budget=budget_mb << 20, run=run, vnnlib=vnnlib)
    rows = []
    for artifact in result["artifacts"]:
        for row in artifact["rows"]:
            mean = artifact["radius"].get(row["arithmetic"], {}).get("mean")
            rows.append([artifact["precision"], row["arithmetic"], row["eps"],
                         "vacuous" if row["vacuous"] else row["certified_accuracy"],
                         "—" if row["vacuous"] else row["robust_error_bound"],
                         row["attack_robust_accuracy"], mean])
    console.print(table(f"certificates ({result['method']}, L{result['norm']}, n={result['n']}, clean accuracy "
                        f"{result['clean_accuracy']:.3f})",
                        ["precision", "arithmetic", "ε", "certified acc.", "robust error bound",
                         "attack robust acc.", "mean certified ε"], rows))
    for precision, reason in (result.get("not_certified") or {}).items():
        console.print(f"{precision}: not certified: {reason}", markup=False)
    for artifact in result["artifacts"]:
        for row in artifact["rows"]:
            if row["vacuous"]:
                console.print(f"{artifact['precision']} {row['arithmetic']}: {row['vacuous']}", markup=False)
                break
