"""Distillation on the built-in digits: small students against their teachers (Barmpas, ch. 4 and 8).

natural   scnn2:16-32 teacher (natural training) → scnn2:4-8 student (≤ 1/4 of the parameters) by temperature
          distillation, with a temperature sweep (accuracy per T, Barmpas Tables 8.7/8.8 in shape) and logit
          matching beside it; target: the best student within 2 points of the teacher's clean accuracy.
robust    a PGD-AT teacher (ε = 0.1) → the same student by ARD (PGD on the student, matching the teacher's clean
          outputs) and by RSLAD; target: the student keeps most (> 1/2) of the teacher's PGD-20 accuracy. A
          student trained by PGD-AT from scratch stands beside them.
Run: python -m benchmarks.distill_digits
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import save_result
from edgerobust.config import TrainConfig
from edgerobust.distill import DistillConfig, distill_model, temperature_sweep
from edgerobust.distill.api import measure
from edgerobust.training.api import TrainSetup, train_model

EPS = 0.1
STUDENT = "scnn2:4-8"
TEACHER = "scnn2:16-32"
TEMPERATURES = [1.0, 2.0, 4.0]


def main() -> None:
    started = time.perf_counter()
    train = TrainConfig(epochs=30, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0, schedule="cosine",
                        augment=False)
    distil = TrainConfig(epochs=40, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0, schedule="cosine",
                         augment=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cpu, robust = TrainSetup(device="cpu"), TrainSetup(device="cpu",
                                                           adversarial={"method": "pgd", "eps": EPS, "steps": 5})
        teacher = train_model(tmp / "teacher", TEACHER, "digits", train, cpu, progress=False)
        robust_teacher = train_model(tmp / "robust-teacher", TEACHER, "digits", train, robust, progress=False)
        scratch = train_model(tmp / "scratch", STUDENT, "digits", train, cpu, progress=False)
        robust_scratch = train_model(tmp / "robust-scratch", STUDENT, "digits", train, robust, progress=False)
        base = DistillConfig(student=STUDENT, eps=EPS, eval_n=300, patience=10)
        sweep = temperature_sweep(tmp / "sweep", teacher.path, TEMPERATURES, base, distil, progress=False,
                                  device="cpu")
        logit = distill_model(tmp / "logit", teacher.path, DistillConfig(**{**vars(base), "method": "logit-matching"}),
                              distil, progress=False, device="cpu")
        ard = distill_model(tmp / "ard", robust_teacher.path,
                            DistillConfig(**{**vars(base), "method": "ard", "steps": 5}), distil, progress=False,
                            device="cpu")
        rslad = distill_model(tmp / "rslad", robust_teacher.path,
                              DistillConfig(**{**vars(base), "method": "rslad", "steps": 5}), distil,
                              progress=False, device="cpu")
        from edgerobust.data import load_dataset

        test = load_dataset("digits", "test")

        def row(name, run, teacher_record=None):
            metrics = measure(run.load_model(), test, base)
            return {"model": name, "spec": run.manifest["model"]["spec"],
                    "parameters": run.manifest["metrics"]["parameters"], "clean": metrics["clean_accuracy"],
                    "pgd20": metrics["robust_accuracy"],
                    "agreement": (run.manifest.get("distillation") or {}).get("test_agreement")}

        rows = [row("teacher (natural)", teacher), row("teacher (PGD-AT)", robust_teacher),
                row("student from scratch", scratch), row("student PGD-AT from scratch", robust_scratch),
                row("student logit matching", logit), row("student ARD (robust teacher)", ard),
                row("student RSLAD (robust teacher)", rslad)]
        for r in sweep["rows"]:
            rows.append(row(f"student temperature T={r['temperature']:g}", _open(tmp / "sweep" / r["run"])))
    by = {r["model"]: r for r in rows}
    best = max((r for r in rows if r["model"].startswith("student temperature")), key=lambda r: r["clean"])
    result = {
        "eps": EPS, "attack": "pgd20 on the first 300 test points", "rows": rows,
        "sweep": sweep["rows"], "best_temperature_student": best["model"],
        "parameter_ratio": best["parameters"] / by["teacher (natural)"]["parameters"],
        "clean_gap_points": 100 * (by["teacher (natural)"]["clean"] - best["clean"]),
        "ard_keeps_of_teacher_pgd": by["student ARD (robust teacher)"]["pgd20"] / by["teacher (PGD-AT)"]["pgd20"],
        "rslad_keeps_of_teacher_pgd": by["student RSLAD (robust teacher)"]["pgd20"] / by["teacher (PGD-AT)"]["pgd20"],
        "seconds": time.perf_counter() - started,
    }
    result["targets_met"] = {"quarter_parameters": result["parameter_ratio"] <= 0.25,
                             "within_2_points": result["clean_gap_points"] <= 2.0,
                             "keeps_most_pgd": max(result["ard_keeps_of_teacher_pgd"],
                                                   result["rslad_keeps_of_teacher_pgd"]) > 0.5}
    for r in rows:
        print(f"{r['model']:34s} params {r['parameters']:6d}  clean {r['clean']:.4f}  pgd20 {r['pgd20']:.4f}")
    print({k: v for k, v in result.items() if k not in ("rows", "sweep")})
    print("saved", save_result("distill_digits", result))


def _open(path):
    from edgerobust.run import RunDir

    return RunDir.open(path)


if __name__ == "__main__":
    main()
