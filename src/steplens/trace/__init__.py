"""Traces: step events plus captures reduced as they are recorded, saved in one documented format.

- `plan`: what to capture (`CapturePlan.parse("blocks.*.resid_post:norm,proj16@0-4")`);
- `reducers`: norm, mean, projK, pcaK, full, applied to (B, N, D) tokens as they are recorded;
- `budget`: a plan's exact storage, checked before sampling;
- `recorder`: the hooks and step callback that record, and `record`, which samples with them;
- `storage`: `Trace`, its on-disk format `steplens-trace-v1`, `Trace.save` / `Trace.load` (no model needed).
Analysis lives in pure functions elsewhere, never on `Trace`.
"""

from .budget import CaptureBudgetError, check_budget, estimate_bytes
from .plan import Capture, CapturePlan
from .recorder import Recorder, TraceRecorder, record
from .reducers import REDUCER_DOCS, projection, reduce_tokens
from .storage import (EVENT_DOCS, EVENT_FIELDS, FORMAT, VERSION, Cache, CacheKey, Trace, TraceError, capture_key, describe,
                      parse_capture_key)

__all__ = ["EVENT_DOCS", "EVENT_FIELDS", "FORMAT", "REDUCER_DOCS", "VERSION", "Cache", "CacheKey", "Capture", "CaptureBudgetError",
           "CapturePlan", "Recorder", "Trace", "TraceError", "TraceRecorder", "capture_key", "check_budget", "describe",
           "estimate_bytes", "parse_capture_key", "projection", "record", "reduce_tokens"]
