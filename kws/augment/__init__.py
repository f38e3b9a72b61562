"""Training-only augmentation stages, batched on the training device."""
