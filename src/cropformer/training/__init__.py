"""The Lightning layer: LightningModule, optimisation, callbacks (on top of the plain parts)."""
