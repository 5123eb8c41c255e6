"""Data: annotation readers, grid target encoding, augmentation and the batch generator."""
