"""ganforge's GAN engine: a plain PyTorch library (no web, queue or database imports).

Modules: config (TrainConfig), data (datasets), nets (G and D), losses, augment
(DiffAugment), ema, training (the loop), checkpoint (safetensors + JSON), sampling
(seeded latents, PNG grids), metrics (Fréchet distance in a small classifier's space),
export (ONNX and TorchScript generator files).
Nothing here touches CUDA at import time; devices are passed in.
"""

from gan_core.config import TrainConfig

__all__ = ["TrainConfig"]
__version__ = "0.1.0"
