"""ept: Explosive Prompt Tuning (EPT, EPT*) and its baselines on frozen Hugging Face models."""

__version__ = "0.1.0"
