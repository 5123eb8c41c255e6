"""Model: network, loss, decoding and post-processing, validation, evaluation."""
