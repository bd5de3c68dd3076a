"""Image-to-image translation: pix2pix (paired, A → B) and CycleGAN (unpaired, A ↔ B).

``config`` (PairedConfig, UnpairedConfig), ``nets`` (U-Net, ResNet-block generator,
PatchGAN), ``state`` (nets, optimizers, EMA, image pools; saved and restored whole),
``steps`` (one D and G update of each kind), ``run`` (the kind of run the training loop
drives) and ``inference`` (load a translator from a checkpoint, translate images).
"""
