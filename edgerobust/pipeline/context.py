"""The pipeline: named steps run in order over one output directory, each adding summary rows."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry
from ..run import RunDir


@dataclass
class PipelineContext:
    out: Path  # the pipeline's directory; the main run lives in out / "model"
    recipe: dict[str, Any]
    progress: bool | None = None
    device: str | None = None  # auto | cpu | cuda | cuda:N for every step that computes (None: auto)
    run: RunDir | None = None  # the run later steps work on (the trained, then compressed model)
    runs: dict[str, RunDir] = field(default_factory=dict)  # every run made, by step name
    summary: list[tuple[str, str, Any]] = field(default_factory=list)  # (step, what, value)
    steps: list[str] = field(default_factory=list)  # the steps this pipeline runs (set by run_steps)

    def add(self, step: str, what: str, value: Any) -> None:
        self.summary.append((step, what, value))


Step = Callable[[PipelineContext], None]
PIPELINE_STEPS: Registry[Step] = Registry("pipeline step")


def check_steps(ctx: PipelineContext, steps: list[str]) -> None:
    """Fail on an unknown step, or settings a step cannot run with (its `check`), before any work."""
    for name in steps:
        PIPELINE_STEPS.get(name)
    for name in steps:
        check = getattr(PIPELINE_STEPS.get(name), "check", None)
        if check is not None:
            check(ctx)


def run_steps(ctx: PipelineContext, steps: list[str], on_step: Callable[[str], None] | None = None) -> PipelineContext:
    check_steps(ctx, steps)
    ctx.steps = list(steps)
    for name in steps:
        if on_step:
            on_step(name)
        started = time.perf_counter()
        PIPELINE_STEPS.get(name)(ctx)
        ctx.add(name, "seconds", round(time.perf_counter() - started, 1))
    return ctx
