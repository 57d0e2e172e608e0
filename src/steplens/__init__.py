"""steplens: open up how video diffusion models reason along their denoising steps."""

from __future__ import annotations

__version__ = "0.1.0"

from .tasks import Score, Task, get_task

__all__ = ["Score", "Task", "__version__", "get_task"]
