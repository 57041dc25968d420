"""Inference outside a Trainer: reading checkpoints (:mod:`.checkpoint`) and export to ONNX / TorchScript
(:mod:`.export`)."""
