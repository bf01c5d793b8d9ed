"""o1pruner: length-harmonizing fine-tuning (O1-Pruner) for long-thought reasoning models."""

__version__ = "0.1.0"
