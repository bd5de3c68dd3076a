"""Forcing a divergence: the discriminator's loss turned NaN at a chosen evaluation."""

from __future__ import annotations

import gan_core.steps as steps


def nan_d_loss_from(monkeypatch, bad_call: int, once: bool = False) -> None:
    """Make D's loss NaN from its bad_call-th evaluation on (d_steps=1: from that step), or
    only at that evaluation with ``once``."""
    real_get_loss = steps.get_loss
    calls = [0]

    def get_loss(name):
        loss = real_get_loss(name)
        d_loss = loss.d_loss

        def poisoned(real_logits, fake_logits):
            calls[0] += 1
            out = d_loss(real_logits, fake_logits)
            bad = calls[0] == bad_call if once else calls[0] >= bad_call
            return out * float("nan") if bad else out

        loss.d_loss = poisoned
        return loss

    monkeypatch.setattr(steps, "get_loss", get_loss)
