"""steplens: open up how video diffusion models reason along their denoising steps."""

from __future__ import annotations

__version__ = "0.1.0"

from .hooks import hooks
from .models.protocol import Cond, Denoiser, Prediction
from .models.registry import load
from .runner import SamplingConfig, generate, prepare
from .sampling import StepEvent, flow_sigmas, sample
from .tasks import Score, Task, get_task

__all__ = ["Cond", "Denoiser", "Prediction", "SamplingConfig", "Score", "StepEvent", "Task", "__version__", "flow_sigmas",
           "generate", "get_task", "hooks", "load", "prepare", "sample"]
