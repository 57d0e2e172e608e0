"""Test-time search along the denoising steps: screen seeds by their early plan, spend compute where it pays."""

from .methods import (COLD, FINALS, KINDS, PAPER_ENSEMBLE, InstanceRecord, SearchMethod, baseline_methods, fit_m, method_nfe,
                      pick_final, screen_methods, screen_nfe, select, survivors)
from .run import (collect, default_methods, evaluate_methods, load_records, run_search, run_sweep, sample_trajectories,
                  screen_latents, select_per_budget, selection_table, summarize, sweep_grid)
from .scores import SCORES, EarlyScore, get_score, maze_route_score, widest_route

__all__ = ["COLD", "FINALS", "KINDS", "PAPER_ENSEMBLE", "SCORES", "EarlyScore", "InstanceRecord", "SearchMethod", "baseline_methods",
           "collect", "default_methods", "evaluate_methods", "fit_m", "get_score", "load_records", "maze_route_score", "method_nfe",
           "pick_final", "run_search", "run_sweep", "sample_trajectories", "screen_latents", "screen_methods", "screen_nfe", "select",
           "select_per_budget", "selection_table", "summarize", "survivors", "sweep_grid", "widest_route"]
