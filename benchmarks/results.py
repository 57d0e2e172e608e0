"""The README's "What the reference model shows" section, written from a `measure_all.sh` folder.

    python benchmarks/results.py runs/measure > runs/measure/results.md

Reads only the JSON that the measuring commands wrote (never runs a model), so every number in the
section comes from `bash benchmarks/measure_all.sh OUT`; each part names the command behind it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> Any | None:
    """A JSON file, or the JSON object a benchmark printed (after any log lines); None if absent."""
    if not path.is_file():
        return None
    text = path.read_text()
    return json.loads(text[text.index("{"):])


def ci(v: float, lo_hi: list[float], pct: bool = True) -> str:
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.3f}")
    return f"{f(v)} [{f(lo_hi[0])}, {f(lo_hi[1])}]"


def card(out: Path) -> list[str]:
    rows = sorted(((s["config"]["size"], s) for p in out.glob("card/size*/summary.json") if (s := load(p))), key=lambda r: r[0])
    if not rows:
        return []
    lines = ["### Solve rate per maze size", "",
             "Single seed, 20 Euler steps, held-out instances (`steplens evaluate --model maze --size S --n N --seed 10000 --steps 20`):", "",
             "| maze | n | solved % [95% CI] | mean path IoU |", "|---|---|---|---|"]
    lines += [f"| {k}x{k} | {s['n']} | {ci(s['solve_rate'], s['solve_rate_ci95'])} | {s['mean_score']:.3f} |" for k, s in rows]
    return lines + [""]


def cos(out: Path, name: str) -> list[str]:
    s, m = load(out / name / "summary.json"), load(out / name / "manifest.json")
    if not s:
        return []
    c, size = s["commit_step"], m["config"]["size"]
    d = s["off_solution_mass_early_minus_late"], s["off_solution_mass_early_minus_late_ci95"]
    sc = s["self_correction"]
    return [f"- **Chain-of-Steps, {size}x{size}** (`steplens probe cos --size {size} --n {s['n']}`): solve rate {100 * s['solve_rate']:.0f}%. "
            f"Path colour on floor blocks off the solution is {s['off_solution_mass_early']:.3f} in the first quarter of the steps and "
            f"{s['off_solution_mass_late']:.3f} in the last (early minus late {ci(d[0], d[1], pct=False)}, paired bootstrap); "
            f"{100 * s['multiple_candidates_early']:.0f}% of samples light a dead-end branch early "
            f"(95% CI {100 * s['multiple_candidates_early_ci95'][0]:.0f}-{100 * s['multiple_candidates_early_ci95'][1]:.0f}%). "
            f"Commit step (the decoded answer never changes after it): median {c['median']:.0f} of {s['n_steps']} "
            f"(10th-90th percentile {c['q10']:.0f}-{c['q90']:.0f}). Self-correction: {sc['corrected']} samples wrong at some step and "
            f"right at the end, {sc['lost']} the reverse."]


def _worst(w: dict[str, Any], what: str) -> str:
    if len(w["tied"]) > 1:
        return f"{what}s {', '.join(map(str, w['tied']))} tie at {100 * w['mean']:.0f}%"
    return f"{what} {w['index']}" + (f" (sigma {w['sigma']:.2f})" if "sigma" in w else "") + f" {100 * w['mean']:.0f}%"


def perturb(out: Path) -> list[str]:
    s, m = load(out / "probe_perturb" / "summary.json"), load(out / "probe_perturb" / "manifest.json")
    if not s or not m:
        return []
    c = m["config"]
    flags = f"--n {s['n']} --every {c['every']} --mode {','.join(s['modes'])}" + (
        f" --frame-window {c['frame_window'][0]}:{c['frame_window'][1]}" if c.get("frame_window") else "")
    lines = [f"- **Noise at a step vs at a frame** (`steplens probe perturb {flags}`): clean solve rate "
             f"{ci(s['clean_solve_rate'], s['clean_solve_rate_ci95'])}%."]
    for mode, r in s["by_mode"].items():
        line = (f"  - `{mode}` ({r['what']}): solve rate after noise at step s (sigma of the injected latent) "
                + ", ".join(f"{p['index']} ({p['sigma']:.2f}) {100 * p['mean']:.0f}" for p in r["noise_at_step"])
                + f"%; worst {_worst(r['worst_step'], 'step')}; by third of the trajectory "
                + ", ".join(f"{t['third']} {ci(t['mean'], [t['lo'], t['hi']])}" for t in r["step_by_third"]) + "%")
        if r.get("worst_frame_before_answer"):
            line += f"; noise on a frame at every step: worst before the answer frame {_worst(r['worst_frame_before_answer'], 'frame')}"
        if "step_minus_frame_drop" in r:
            line += f"; the worst step costs {ci(r['step_minus_frame_drop'], r['step_minus_frame_drop_ci95'])} points more (paired bootstrap)"
        if w := r.get("frame_window"):
            a, z = w["window"]
            line += (f"; a frame corrupted after steps {a}-{z - 1} only, then released: solve rate "
                     + ", ".join(f"frame {p['index']} {100 * p['mean']:.0f}%" for p in w["scores"])
                     + ", its x0_hat's relative distance to the clean run's at release -> output "
                     + ", ".join(f"frame {q['frame']} {q['distance_after_release'][0]['mean']:.2f} -> "
                                 f"{q['distance_after_release'][-1]['mean']:.2f}" for q in w["recovery"]))
        lines.append(line + ".")
    return lines


def cka(out: Path) -> list[str]:
    lines = []
    for name in ("probe_cka", "probe_cka_add"):
        s, m = load(out / name / "summary.json"), load(out / name / "manifest.json")
        if not s or not m or "cka" not in s:
            continue
        c, k = m["config"], s["cka"]
        flags = f"--n {s['n']} --every {c['every']} --mode {','.join(s['modes'])}" + (f" --strength {c['strength']}" if "add" in s["modes"] else "")
        lines.append(f"- **Information flow** (`steplens probe cka {flags}`): 1 - CKA between the clean and the perturbed run, each CKA "
                     "per sample with tokens as rows (x0_hat: latent channels as columns; blocks: residual-stream features), for injections "
                     f"at steps {' '.join(map(str, k['injection_steps']))}; full maps in `cka_flow.json`.")
        for mode, states in k["modes"].items():
            solved = " ".join(f"{100 * p['mean']:.0f}" for p in s["by_mode"][mode]["noise_at_step"])
            parts = []
            for state, h in states.items():
                row = " ".join("-" if e["mean"] is None else f"{e['mean']:.2f}" for e in h["per_injection_step"])
                fs = h["fresh_seed"]["mean"]
                d = h.get("first_minus_last_injection")
                parts.append(f"{state} at {'the output' if h['observed'] == 'final output' else h['observed']}: {row}" + (f" (a fresh seed: {fs:.2f})" if fs is not None else "")
                             + (f", earliest minus latest {ci(d['diff'], d['ci95'], pct=False)}" if d else ""))
            lines.append(f"  - `{mode}`: solve rate after the injection {solved}% (clean {100 * s['clean_solve_rate']:.0f}%); " + "; ".join(parts) + ".")
    return lines


def layers(out: Path) -> list[str]:
    s = load(out / "probe_layers" / "summary.json")
    if not s:
        return []
    lines = []
    if "skip_drop" in s:
        drops = ", ".join(f"L{k} {ci(v['drop'], v['ci95'])}" for k, v in s["skip_drop"].items())
        lines.append(f"- **Layers** (`steplens probe layers --n {s['n']}`): solve-rate drop in points when one block is skipped at every step: "
                     f"{drops}; most important: {s['most_important_layers']}."
                     + "".join(_window(out, name) for name in ("probe_layers_w0_5", "probe_layers_w10_20")))
    for name in ("probe_layers", "probe_layers_resid_all", "probe_layers_writes"):
        lines += _patching(out, name)
    if tm := load(out / "probe_layers" / "token_maps.json"):
        lines.append(f"- **Token maps** (`steplens probe layers`, {tm['n_train']} train / {tm['n_test']} held-out samples): scene vs background "
                     f"readable from layer {tm['perception_layer']} (depth {tm['perception_depth']:.2f}); action (path) vs background (dead end), "
                     f"at the steps whose input does not show the path yet ({tm.get('reasoning_steps')}), becomes readable at layer "
                     f"{tm.get('reasoning_layer')} (depth {tm.get('reasoning_depth', float('nan')):.2f}; balanced accuracy "
                     f"{tm.get('reasoning_input_accuracy', float('nan')):.2f} at the input, {tm.get('reasoning_peak_accuracy', float('nan')):.2f} at best). Paper's claim "
                     f"\"early layers perceive, middle layers reason\": {tm['claim']}.")
    return lines


def _patching(out: Path, name: str) -> list[str]:
    s, m = load(out / name / "summary.json"), load(out / name / "manifest.json")
    if not s or "patching" not in s:
        return []
    p, c = s["patching"], m["config"]
    rows = ", ".join(f"L{l} {100 * r['flip']['rate']:.0f}/{100 * r['keep']['rate']:.0f}/{100 * r['break']['rate']:.0f}"
                     for l, r in p["per_layer"].items())
    return [f"- **Activation patching, {p['variant']}** (`steplens probe layers --patch {p['variant']} --patch-window "
            f"{p['window'][0]}:{p['window'][1]} --size {c['probe']['size']} --n {s['n']}`): flip/keep/break % per layer: {rows}; "
            f"{p['note']}" + (f"; the paper flips at about depth 0.5 (layer 20 of 40)." if p["variant"] == "resid" else ".")]


def _window(out: Path, name: str) -> str:
    s, m = load(out / name / "summary.json"), load(out / name / "manifest.json")
    if not s or not m:
        return ""
    a, b = m["config"]["window"]
    drops = ", ".join(f"L{k} {100 * v['drop']:.0f}" for k, v in s["skip_drop"].items())
    return f" Skipping a block only during steps {a}-{b - 1} (`--window {a}:{b}`): {drops} points."


def behaviour(out: Path) -> list[str]:
    s = load(out / "probe_behaviour" / "summary.json")
    if not s:
        return []
    p = s["perception"]
    d = p["action_minus_scene"], p["action_minus_scene_ci95"]
    rate = lambda r: f"{100 * r['rate']:.0f}% (95% CI {100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}%)"  # noqa: E731
    return [f"- **Behaviours** (`steplens probe behaviour --n {s['n']}`): pruning (superimposed candidates, the right one kept) in "
            f"{rate(s['pruning'])}, correction (a committed wrong answer replaced by the right one) in {rate(s['correction'])}; "
            f"{100 * s['lost_rate']:.0f}% lose a right answer. Working memory: {s['memory']['verdict']}. Perception before action: scene "
            f"blocks settle at step {p['scene_settle_step_mean']:.1f}, action blocks at {p['action_settle_step_mean']:.1f} (action minus "
            f"scene {d[0]:.2f} steps, 95% CI {d[1][0]:.2f}..{d[1][1]:.2f}): {p['verdict']}."]


def ensemble(out: Path) -> list[str]:
    lines = []
    main = load(out / "ens_main" / "summary.json")
    if main:
        m, size = main["methods"], load(out / "ens_main" / "manifest.json")["config"]["size"]
        e = m["ensemble"]
        lines += [f"- **Latent-trajectory ensemble, {size}x{size}** (`steplens ensemble run --size {size} --k 3 --window 0:2 --rule mean_xt "
                  f"--n {main['n']} --no-baselines`): single seed {ci(m['single']['solve_rate'], m['single']['solve_rate_ci95'])}%, "
                  f"ensemble {ci(e['solve_rate'], e['solve_rate_ci95'])}%, paired difference "
                  f"{ci(e['diff_vs_single']['solve_rate'][0], e['diff_vs_single']['solve_rate'][1:])} points at {e['nfe']} vs "
                  f"{m['single']['nfe']} network evaluations."]
    base = load(out / "ens_baselines" / "summary.json")
    if base:
        lines += ["", f"Compute-matched baselines on {base['n']} instances (`steplens ensemble run ... --n {base['n']}`):", "",
                  "| method | NFE | solve rate % [95% CI] | diff vs single, points [95% CI] |", "|---|---|---|---|"]
        for name, s in base["methods"].items():
            d = s.get("diff_vs_single")
            tag = " (oracle, upper bound)" if s["needs_ground_truth"] else ""
            lines.append(f"| {name}{tag} | {s['nfe']} | {ci(s['solve_rate'], s['solve_rate_ci95'])} | "
                         f"{ci(d['solve_rate'][0], d['solve_rate'][1:]) if d else '-'} |")
        if "single_cold" in base["methods"] and "ensemble" in base["methods"]:
            cold, ens = base["methods"]["single_cold"], base["methods"]["ensemble"]
            lines += ["", "`single_cold` is one seed whose initial noise is scaled by 1/sqrt(K), the norm of the noise part of the latent after "
                      "mean_xt first averages K trajectories: it measures what a colder start alone buys. Here it reaches "
                      f"{100 * cold['solve_rate']:.1f}% against the ensemble's {100 * ens['solve_rate']:.1f}%"
                      + (", so the ensemble's gain on this model is explained by the colder start." if cold["solve_rate"] >= ens["solve_rate"]
                         else ".")]
            for c in ("single_cold", "single_matched"):
                if d := ens.get("diff_vs_" + c):
                    lines[-1] += f" Ensemble minus {c} (paired): {ci(d['solve_rate'][0], d['solve_rate'][1:])} points."
    for name in ("ens_renoise",):
        if (r := load(out / name / "summary.json")) and "ensemble" in r["methods"]:
            e, cfg = r["methods"]["ensemble"], load(out / name / "manifest.json")["config"]
            rows = "; ".join(f"minus {c} {ci(e['diff_vs_' + c]['solve_rate'][0], e['diff_vs_' + c]['solve_rate'][1:])}"
                             for c in ("single", "single_cold", "single_matched") if "diff_vs_" + c in e)
            lines += ["", f"mean_x0_renoise (the merge that keeps K distinct trajectories; `{name}`, n={r['n']}, {cfg['size']}x{cfg['size']}): "
                          f"{ci(e['solve_rate'], e['solve_rate_ci95'])}% at {e['nfe']} NFE; paired differences in points: {rows}."]
    for name in ("ens_sweep_k", "ens_sweep_rules"):
        s = load(out / name / "summary.json")
        if s:
            r = s["recommended"]
            cmd = load(out / name / "manifest.json")["config"]
            lines += ["", f"Sweep `{name}` ({s['n_settings']} settings, {cmd['size']}x{cmd['size']}, n={s['n']}, seeds from {cmd['seed']}; "
                          "`steplens ensemble sweep`, see `benchmarks/measure_all.sh`), bold: recommended:", ""]
            table = (out / name / "sweep.md").read_text().split("\n\nRecommended:")[0].strip().splitlines()
            lines += [_bold(row) if row.rstrip().endswith("** |") else row for row in table]  # sweep.md marks the recommended row
            lines += ["", f"Recommended `{r['name']}`: {r['reason']}."]
            if (re := s.get("recommended_ensemble")) and re["name"] != r["name"]:
                lines[-1] += f" Best setting that merges trajectories (the cold-start controls aside): `{re['name']}`."
    return lines


def _bold(row: str) -> str:
    """A sweep.md row marked recommended (ends in ' **|'): the whole row in bold."""
    cells = [c.strip().rstrip("*").strip() for c in row.strip().strip("|").split("|")]
    return "| " + " | ".join(f"**{c}**" for c in cells) + " |"


def speed(out: Path) -> list[str]:
    lines = []
    if s := load(out / "bench_tasks.json"):
        lines.append(f"- 1,000 maze instances generated, rendered and scored in {s['memory']['total_s']:.1f} s (target < 30 s; "
                     "`python benchmarks/bench_tasks.py`).")
    if s := load(out / "bench_sampling.json"):
        if "precisions" in s:  # fp32 and bf16 paired (issue 23)
            f, b, d = s["precisions"]["fp32"], s["precisions"]["bf16"], s["paired"]["bf16"]
            flags = ", ".join(s["capability"]["cpu_flags"]) or "none"
            lines.append(f"- {s['batch']} {s['size']}x{s['size']} mazes sampled in one batch, {s['steps']} Euler steps: fp32 {f['median_s']:.1f} s, "
                         f"bf16 {b['median_s']:.1f} s, paired ratio {d['ratio_over_fp32']:.2f} (targets 10 s, 0.35; CPU bf16 flags: {flags}; "
                         f"`--precision auto` picks {s['auto_picks']}); {f['of_roofline']:.0%} / {b['of_roofline']:.0%} of the fp32 / bf16 matmul "
                         f"rate; bf16 minus fp32 solve rate on {s['n']} paired instances {d['solve_rate_diff']:+.3f} "
                         f"[{d['solve_rate_diff_ci95'][0]:+.3f}, {d['solve_rate_diff_ci95'][1]:+.3f}] (`python benchmarks/bench_sampling.py`).")
        else:
            lines.append(f"- {s['n']} {s['size']}x{s['size']} mazes sampled in one batch, {s['steps']} Euler steps: {s['median_s']:.1f} s "
                         f"(target 10 s; `python benchmarks/bench_sampling.py`).")
    if s := load(out / "bench_train.json"):
        lines.append(f"- A training step (batch {s['batch']}, {s['size']}x{s['size']}): fp32 {s['median_step_s']['fp32']:.2f} s, bf16 autocast "
                     f"{s['median_step_s']['bf16']:.2f} s, paired ratio {s['ratio_bf16_over_fp32']:.2f} (target 0.5; "
                     "`python benchmarks/bench_train.py`).")
    if s := load(out / "bench_allocator.json"):
        lines.append(f"- Freed memory kept in the process (`steplens.allocator`, on in the CLI): sampling {s['speedup_kept']:.2f}x faster "
                     f"than glibc's defaults ({s['n']} mazes, median of {s['pairs']} paired fresh-process runs; "
                     "`python benchmarks/bench_allocator.py`).")
    if s := load(out / "bench_trace.json"):
        r = s["ratio_vs_plain"]
        lines.append(f"- Tracing x0_hat at every step: {r['x0_tracing']:.3f}x plain sampling (target 1.03); norm + 16-dim projection "
                     f"of every block's resid_post at every step: {r['captures_resid_post']:.3f}x (target 1.15), all four sites "
                     f"{r['captures_all_sites']:.3f}x; stored {s['stored_mb']['captures_resid_post']} MB, exactly the estimate "
                     f"({s['estimate_exact']}) (`python benchmarks/bench_trace.py --model maze`).")
    if s := load(out / "bench_ensemble.json"):
        rows = ", ".join(f"K={r['k']} {r['ratio_batched']:.2f}x batched, {r['ratio_ensemble']:.2f}x as `ensemble_latents` runs it"
                         for r in s["results"])
        lines.append(f"- A K-seed ensemble vs K sequential single-seed runs: {rows} (target <= 0.6; after a mean_xt merge the K "
                     "trajectories are identical and one is computed; batching alone gains little on 2 CPU cores, which are busy "
                     "at batch 1 already; `python benchmarks/bench_ensemble.py`).")
    if s := load(out / "bench_demo.json"):
        c = s.get("config", {})
        sizes = (f", {c['size']}x{c['size']} mazes, n = {c['n_cos']} traced / {c['n_perturb']} perturbed / {c['n_cka']} CKA / "
                 f"{c['n_layers']} layers / {c['n_ensemble']} ensemble" if "n_cos" in c else "")
        rss = f", peak {s['peak_rss_mb']} MB (target 2048)" if "peak_rss_mb" in s else ""
        lines.append(f"- `steplens demo`: {s['wall_s']:.0f} s on {s['threads']} threads{sizes}{rss} (target 180 s; "
                     "`python benchmarks/bench_demo.py`).")
    if s := load(out / "bench_probes.json"):
        lines.append("- Each probe at its default size: " + ", ".join(f"{k} {v:.0f} s" for k, v in s["wall_s"].items())
                     + " (target 60 s each; `python benchmarks/bench_probes.py`).")
    if s := load(out / "bench_ray.json"):
        w = s["wall_s"]
        lines.append(f"- `evaluate` on a local Ray cluster: {w['ray_1_worker']:.1f} s with 1 worker, {w['ray_2_workers']:.1f} s with 2 "
                     f"({s['speedup_2_vs_1_workers']:.2f}x), local {w['local']:.1f} s; identical sample files: {s['identical_samples']} "
                     "(each Ray worker runs one torch thread on one core; `python benchmarks/bench_ray.py`).")
    return ["### Speed (2 CPU cores)", "", *lines, ""] if lines else []


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/measure")
    findings = cos(out, "probe_cos") + cos(out, "probe_cos_harder") + perturb(out) + cka(out) + layers(out) + behaviour(out)
    parts = ["Measured on 2 CPU cores by `bash benchmarks/measure_all.sh OUT` and written by `python benchmarks/results.py OUT`; "
             "all instances are held out (seeds below 2^31, training used none). Timings move by about 10% from run to run "
             "on this machine.", "", *card(out)]
    if findings:
        parts += ["### The paper's findings, on held-out mazes", "", *findings, ""]
    if ens := ensemble(out):
        parts += ["### Ensembles", "", *ens, ""]
    parts += speed(out)
    print("\n".join(parts).rstrip())


if __name__ == "__main__":
    main()
