"""Independent cross-check: the standard suite against ART's AutoAttack on an adversarially trained model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgerobust.data import load_dataset
from edgerobust.evaluation import standard_suite
from edgerobust.training.api import TrainSetup

art = pytest.importorskip("art", reason="dev extra: pip install -e .[dev] installs adversarial-robustness-toolbox")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_standard_suite_is_no_weaker_than_art_autoattack(tmp_path):
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import PyTorchClassifier

    from edgerobust.training import TrainConfig
    from edgerobust.training.adversarial import build_training_loss
    from edgerobust.training.api import train_model

    eps = 0.1
    run = train_model(tmp_path / "at", "scnn2:16-32", "digits", TrainConfig(epochs=10, batch_size=64, lr=0.05,
                                                                            augment=False),
                                                                            TrainSetup(loss=build_training_loss("pgd",
                                                                            eps=eps, steps=5)), progress=False)
    model = run.load_model()
    test = load_dataset("digits", "test").subset(200)
    ours = standard_suite(model, test.images, test.labels, eps, progress=False).robust_accuracy

    classifier = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                                   clip_values=(0.0, 1.0))
    # ART's own APGD-CE, APGD-DLR and Square (one restart each; its default list with 5 restarts, DeepFool and
    # targeted variants takes over ten minutes on 2 cores)
    apgd = dict(norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=100, nb_random_init=1, batch_size=200, verbose=False)
    attacks = [AutoProjectedGradientDescent(classifier, loss_type="cross_entropy", **apgd),
               AutoProjectedGradientDescent(classifier, loss_type="difference_logits_ratio", **apgd),
               SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=1000, nb_restarts=1, batch_size=200,
                            verbose=False)]
    reference = AutoAttack(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=attacks, batch_size=200)
    x = test.images.numpy()
    x_adv = reference.generate(x, y=test.labels.numpy())
    art_accuracy = float((classifier.predict(x_adv).argmax(1) == test.labels.numpy()).mean())
    print(f"standard suite {ours:.3f} vs ART AutoAttack {art_accuracy:.3f} (200 digits, ε={eps})")
    assert ours > 0.2  # an adversarially trained model keeps some robustness at this ε
    assert ours <= art_accuracy + 0.01, f"ours {ours:.3f} vs ART AutoAttack {art_accuracy:.3f}"
