"""Distillation into small students (Barmpas, ch. 4): the library behind `edgerobust distill`."""
from .api import AgreementStopping, distill_model, open_teacher, temperature_sweep
from .settings import THESIS_TEMPERATURES, DistillConfig

__all__ = ["THESIS_TEMPERATURES", "AgreementStopping", "DistillConfig", "distill_model", "open_teacher",
           "temperature_sweep"]
