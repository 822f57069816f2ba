"""[distill]: a student learns from a teacher run (Barmpas, ch. 4: logit matching, temperature, adversarial)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ..config import SEED_LIMIT, ConfigError, register_section, setting

METHODS = ("logit-matching", "temperature", "hinton", "ard", "rslad")

# Barmpas's temperature grid (Tables 8.7/8.8): 0.1…1.0 step 0.1, then 1.5…5.0 step 0.5
THESIS_TEMPERATURES = [round(0.1 * i, 1) for i in range(1, 11)] + [round(1.0 + 0.5 * i, 1) for i in range(1, 9)]


@dataclass
class DistillConfig:
    """[distill]: the teacher run, the student spec, the method and its settings, the data it learns on."""
    teacher: str | None = setting(None, help="teacher run directory (default: the most recent run)")
    student: str = setting("scnn2:8-16", help="student model spec, e.g. scnn2:16-32")
    activation: str | None = setting(None, help="replace the student's ReLUs: kaf, elu, swish, gelu, softplus, kwta")
    method: str = setting("temperature", choices=METHODS,
                          help="logit-matching, temperature, hinton, ard or rslad")
    temperature: float = setting(1.0, gt=0, help="distillation temperature T (temperature, hinton, ard, rslad)")
    temperatures: list[float] | None = setting(None, help="a sweep: one student per temperature")
    soft_weight: float | None = setting(None, ge=0, le=1,
                                        help="weight α of the soft term (hinton 0.9, ard 1, rslad 5/6)")
    eps: float = setting(8 / 255, ge=0, le=1, help="L∞ ε of ard / rslad's inner PGD and of the robustness check")
    steps: int = setting(10, ge=1, help="PGD steps of ard / rslad")
    step_size: float | None = setting(None, gt=0, help="PGD step of ard / rslad (default 2.5ε/steps)")
    pool: list[str] = setting(["train"], help="what the student learns on: 'train' (the teacher's training set, "
                              "labels unused unless the method needs them) or dataset names (an unlabelled pool)")
    pool_size: int | None = setting(None, ge=1, help="at most this many pool images")
    patience: int = setting(10, ge=1, help="stop after this many epochs without better teacher agreement")
    validation: float = setting(0.1, gt=0, lt=1, help="share of the pool held out to measure agreement")
    eval_n: int = setting(500, ge=1, help="test points attacked to measure robust accuracy")
    pgd_steps: int = setting(20, ge=1, help="PGD steps of the robustness check")
    seed: int = setting(0, ge=0, lt=SEED_LIMIT, help="seed of the pool split and the attacks' random starts")
    RENAMED: ClassVar[dict[str, str]] = {"alpha": "soft_weight"}  # [adversarial] alpha is an attack's step size

    def check(self, label: Callable[[str], str] = "[distill] {}".format) -> DistillConfig:
        """Checks across a list: every temperature of a sweep positive (`label` names the key's origin)."""
        for t in self.temperatures or []:
            if not t > 0:
                raise ConfigError(f"{label('temperatures')}: {t} is not positive; every temperature must be > 0")
        return self


register_section("distill", DistillConfig)
