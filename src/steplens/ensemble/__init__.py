"""Training-free latent trajectory ensembles (paper section 6), with compute-matched test-time baselines.

- `merge`: `EnsembleConfig`, the merge rules (mean_xt, mean_v, mean_x0_renoise) and `ensemble_latents`;
- `compute`: network evaluations per instance, to match baselines to an ensemble's compute;
- `select`: choosing one of K continued trajectories (first, agreement, vote, oracle);
- `trajectories`: K trajectories per task instance, decoded and scored;
- `methods`: named methods, the baselines of an ensemble and the settings of a sweep;
- `shards`: evaluating methods into a resumable run folder, locally or on Ray;
- `report`: `compare` and `sweep`, with CIs, tables, plots and a recommendation.
"""

from .compute import matched_steps, nfe_per_instance, step_nfe
from .merge import AFTER, RULES, SELECT, EnsembleConfig, ensemble_latents, merge, merge_callback
from .methods import Method, baselines, cold_single, method_name, sweep_methods
from .report import compare, recommend, summarize_methods, sweep
from .select import agreement_distances, choose, spread, vote_keys
from .shards import EnsembleShard, ensemble_shard, evaluate_methods, sample_key
from .trajectories import Trajectories, run_ensemble, run_trajectories, select_results

__all__ = ["AFTER", "RULES", "SELECT", "EnsembleConfig", "EnsembleShard", "Method", "Trajectories", "agreement_distances", "baselines",
           "choose", "cold_single", "compare", "ensemble_latents", "ensemble_shard", "evaluate_methods", "matched_steps", "merge",
           "merge_callback", "method_name", "nfe_per_instance", "recommend", "run_ensemble", "run_trajectories", "sample_key",
           "select_results", "spread", "step_nfe", "summarize_methods", "sweep", "sweep_methods", "vote_keys"]
