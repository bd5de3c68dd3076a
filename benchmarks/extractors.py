"""Which feature space for an unlabelled dataset? Rotation prediction against a random CNN.

On Fashion-MNIST with the labels hidden, three extractors of the same small CNN are compared:
the classifier (the labelled case, for reference), the rotation-prediction extractor the
service uses for unlabelled data, and the same CNN untrained (random features). Each scores
2,000 test images changed in ways a generator goes wrong -- only 3 of the 10 classes (a
mode collapse), a 3x3 box blur, Gaussian noise of sigma 0.2 -- against 2,000 other test
images, as a multiple of the real-vs-real FD in that space (how far above the noise floor).
Bigger multiples: the space sees the defect more clearly.

    .venv/bin/python benchmarks/extractors.py        # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quality import load_test_split  # noqa: E402
from gan_core.data import load_dataset  # noqa: E402
from gan_core.metrics import (  # noqa: E402
    FeatureClassifier,
    extract_features,
    frechet_distance,
    mean_cov,
    train_classifier,
    train_rotation_extractor,
)


def _fd(model: FeatureClassifier, a: torch.Tensor, b: torch.Tensor) -> float:
    fa, fb = extract_features(model, a), extract_features(model, b)
    return frechet_distance(*mean_cov(fa), *mean_cov(fb))


def main() -> int:
    train = load_dataset("fashion-mnist", image_size=28)
    test_x, test_y = load_test_split()
    order = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(0))
    ref, real = test_x[order[:2000]], test_x[order[2000:4000]]
    three = test_x[torch.isin(test_y, torch.tensor([0, 1, 2]))][:2000]
    x = real.float()
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1).round().clamp(0, 255).to(torch.uint8)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 0.2 * 127.5
    noisy = (x + noise).round().clamp(0, 255).to(torch.uint8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_cnn = FeatureClassifier(1, 4, kind="rotation").eval()
    models = {
        "classifier (labels)": train_classifier(train.images, train.labels, num_classes=10),
        "rotation (no labels)": train_rotation_extractor(train.images),
        "random CNN": random_cnn,
    }
    table = {}
    for name, model in models.items():
        floor = _fd(model, ref, real)
        table[name] = {"real_vs_real": round(floor, 5)} | {
            case: round(_fd(model, ref, images) / floor, 1)
            for case, images in (
                ("3 of 10 classes", three),
                ("blurred", blurred),
                ("noise 0.2", noisy),
            )
        }
        print(name, table[name], flush=True)
    out = REPO / "benchmarks/results/extractors.json"
    out.write_text(json.dumps(table, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
