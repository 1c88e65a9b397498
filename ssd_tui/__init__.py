"""ssd-tui: Simple Self-Distillation of code LLMs, round after round, from the terminal."""

__version__ = "0.1.0"
