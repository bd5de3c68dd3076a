"""Image-quality scoring without downloads: FD, KID, precision/recall and class coverage.

Like FID, but by default the feature extractor is a small CNN trained on the dataset itself
(a classifier when there are labels, rotation prediction when there are none), so nothing is
downloaded and scoring works for any image size >= 16 and 1 or 3 channels. Numbers are only
comparable between runs scored with the same extractor file and reference. The standard
Inception-v3 features are available from a local weights file (`load_inception`).

- features.py: the extractor network and its two training recipes
- files.py: extractor save/load (safetensors), dataset and extractor hashes
- distances.py: Fréchet distance, KID, k-NN precision/recall over feature matrices
- scoring.py: the real-data reference, score_generator, and the older QualityScorer
- inception.py: torch-fidelity's FID Inception-v3 from a local file (imported lazily)
- translation.py: TranslationScorer, translation checkpoints on a PairDataset's held-out split
  (FD/KID in the target domain's features; L1, PSNR, SSIM for pairs); import it from there
"""

from __future__ import annotations

from gan_core.metrics.distances import (
    frechet_distance,
    kid,
    kid_subset_indices,
    knn_radii,
    mean_cov,
    precision_recall,
)
from gan_core.metrics.features import (
    DEFAULT_EPOCHS,
    EXTRACTOR_VERSION,
    Extractor,
    ExtractorKind,
    FeatureClassifier,
    classifier_accuracy,
    default_epochs,
    extract_features,
    train_classifier,
    train_extractor,
    train_rotation_extractor,
)
from gan_core.metrics.files import (
    dataset_fingerprint,
    extractor_digest,
    load_classifier,
    load_extractor,
    read_extractor_metadata,
    save_classifier,
    save_extractor,
)
from gan_core.metrics.inception import (
    INCEPTION_FEATURE_DIM,
    InceptionFeatures,
    inception_features,
    load_inception,
)
from gan_core.metrics.scoring import (
    DEFAULT_NUM_SAMPLES,
    REFERENCE_FEATURES,
    REFERENCE_STATS_SIZE,
    GeneratorScore,
    QualityScore,
    QualityScorer,
    RealReference,
    build_reference,
    class_coverage,
    feature_stats,
    load_reference,
    save_reference,
    score_generator,
)

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_NUM_SAMPLES",
    "EXTRACTOR_VERSION",
    "INCEPTION_FEATURE_DIM",
    "REFERENCE_FEATURES",
    "REFERENCE_STATS_SIZE",
    "Extractor",
    "ExtractorKind",
    "FeatureClassifier",
    "GeneratorScore",
    "InceptionFeatures",
    "QualityScore",
    "QualityScorer",
    "RealReference",
    "build_reference",
    "class_coverage",
    "classifier_accuracy",
    "dataset_fingerprint",
    "default_epochs",
    "extract_features",
    "extractor_digest",
    "feature_stats",
    "frechet_distance",
    "inception_features",
    "kid",
    "kid_subset_indices",
    "knn_radii",
    "load_classifier",
    "load_extractor",
    "load_inception",
    "load_reference",
    "mean_cov",
    "precision_recall",
    "read_extractor_metadata",
    "save_classifier",
    "save_extractor",
    "save_reference",
    "score_generator",
    "train_classifier",
    "train_extractor",
    "train_rotation_extractor",
]
