"""hfx: declarative, config-driven fine-tuning of Hugging Face models."""

__version__ = "0.1.0"
