"""The study's report: results.json, report.md and its figures, from the cells' summaries.

`write(config, workdir)` reads what `amdarts.study` left in the workdir and writes

    results.json                 every number (config, per-cell summaries, arm rows, plan)
    report.md                    Table 1 in miniature, the hypergradient table, the
                                 settings, wall times and what the numbers show
    figures/curves.png           Fig. 1 / 8: none weight, skip ratio, #P, super-net
                                 accuracy per epoch, one colour per arm
    figures/eta_sweep.png        Fig. 5: the final normal cell of every η (η = 0 is
                                 first-order DARTS), first seed
    figures/hypergradient.png    cos(g2′, g2), cos(g2_DARTS, g2) and ⟨g2′, g2⟩ per step
    figures/grad_norms.png       ‖g1‖, ‖g2‖ and ‖g2‖/‖g1‖ per epoch
    figures/hessian.png          dominant eigenvalue of ∇²α L_val per epoch (R-DARTS)
    toy/toy.png                  Fig. 4, the toy problem of Appendix A.2

The sentences of the report are computed from the numbers by fixed rules (stated
with them), so a rerun with other numbers says what those show, in favour of the
paper or not.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Sequence

from amdarts import config_lib
from amdarts import genotype_text
from amdarts import genotypes
from amdarts import metrics as metrics_lib
from amdarts import study

# Table 1 of the paper (CIFAR-10, S1, 200 search epochs), for comparison only.
PAPER_TABLE1 = {
    'random': (3.29, None), 'first_order': (6.18, 0), 'darts_second_order': (5.15, 0),
    'amended': (2.71, 7),
}

# A normal cell at least this share skip_connect counts as collapsed: the paper's
# dummy architecture is all skip_connect; half is where the count starts to dominate.
COLLAPSE_SKIP_RATIO = 0.5


def _fmt(x, spec: str = '.2f', scale: float = 1.0, na: str = 'n/a') -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return na
  return format(scale * x, spec)


def _err(row: dict, unit: str = '') -> str:
  """Test error in % as mean ± std, or the mean and n=1 with one cell."""
  if row['test_error_mean'] is None:
    return 'n/a'
  mean = _fmt(row['test_error_mean'], '.2f', 100)
  if row['test_error_std'] is None:
    return f'{mean}{unit} (n={row["cells"]})'
  return f'{mean} ± {_fmt(row["test_error_std"], ".2f", 100)}{unit}'


def table1(arms: dict) -> list[str]:
  """Markdown rows of the miniature Table 1 (every arm, config order)."""
  lines = ['| arm | test error (%) | #P | skip count | none weight | super-net val acc (%) '
           '| median cos(g2′, g2) |', '|---|---|---|---|---|---|---|']
  for row in arms.values():
    n = row['num_ops']
    skip = 'n/a' if row['skip_count_mean'] is None else f'{row["skip_count_mean"]:.1f}/{n}'
    if row['estimator'] is None:  # Random search trains no super-net: nothing to measure.
      searched = ['—'] * 3
    else:
      searched = [_fmt(row['none_weight_mean'], '.3f'),
                  _fmt(row['supernet_val_acc_mean'], '.1f', 100),
                  _fmt(row['cos_amended_median'], '.3f')]
    lines.append(f'| {row["arm"]} | {_err(row)} | {_fmt(row["num_parametric_mean"], ".1f")} '
                 f'| {skip} | ' + ' | '.join(searched) + ' |')
  return lines


def hypergradient_table(arms: dict) -> list[str]:
  """Markdown rows of the hypergradient and curvature measurements of the search arms."""
  lines = ['| arm | diagnosed steps | ⟨g2′, g2⟩ ≥ 0 | median cos(g2_DARTS, g2) | '
           'cos(g2_DARTS, g2) < 0 | median ‖g2‖/‖g1‖ | λ_dom start → end | params (M) |',
           '|---|---|---|---|---|---|---|---|']
  for row in arms.values():
    if row['estimator'] is None:
      continue
    lines.append(
        f'| {row["arm"]} | {row["diag_points"]} | {_fmt(row["inner_nonnegative"], ".0%")} | '
        f'{_fmt(row["cos_darts_median"], ".3f")} | {_fmt(row["cos_darts_negative"], ".0%")} | '
        f'{_fmt(row["g2_over_g1_median"], ".3g")} | '
        f'{_fmt(row["hessian_first_mean"], ".3g")} → {_fmt(row["hessian_last_mean"], ".3g")} | '
        f'{_fmt(row["params_mean"], ".3f", 1e-6)} |')
  return lines


# ------------------------------------------------------------------ findings


def _search_rows(arms: dict) -> list[dict]:
  return [r for r in arms.values() if r['estimator'] is not None and r['cells']]


def _ratio(row: dict) -> float | None:
  if row['skip_count_mean'] is None or not row['num_ops']:
    return None
  return row['skip_count_mean'] / row['num_ops']


def findings(results: dict) -> list[str]:
  """What the numbers show, as sentences, each computed by a stated rule.

  Args:
    results: `study.collect`'s dict.

  Returns:
    Markdown bullet texts.
  """
  arms = results['arms']
  rows = _search_rows(arms)
  out = []
  if not rows:
    return ['No search arm has a finished cell yet.']

  # 1. Collapse at the end of the search.
  collapsed = [r['arm'] for r in rows if (_ratio(r) or 0) >= COLLAPSE_SKIP_RATIO]
  kept = [r['arm'] for r in rows if r['arm'] not in collapsed]
  desc = '; '.join(f'{r["arm"]} {r["skip_count_mean"]:.1f}/{r["num_ops"]} skip_connect, '
                   f'#P {r["num_parametric_mean"]:.1f}' for r in rows)
  out.append(
      f'Final normal cells (mean over seeds): {desc}. By the rule "skip_connect is at least '
      f'{COLLAPSE_SKIP_RATIO:.0%} of the preserved normal-cell ops", '
      f'{", ".join(collapsed) or "no arm"} collapsed and {", ".join(kept) or "no arm"} did not.')

  # 2. The paper's central claim, first-order vs amended.
  first = arms.get('first_order')
  amended = [r for r in rows if r['estimator'] and r['estimator'].startswith('amended')]
  if first and first['cells'] and amended:
    f_ratio = _ratio(first)
    less = [r['arm'] for r in amended if _ratio(r) is not None and _ratio(r) < f_ratio]
    more = [r['arm'] for r in amended if _ratio(r) is not None and _ratio(r) > f_ratio]
    verdict = ('agrees with' if len(less) == len(amended) else
               'contradicts' if len(more) == len(amended) else 'only partly agrees with')
    out.append(
        f'The paper (Table 1, S1, 200 epochs) has first-order DARTS at #P 0 and the amended '
        f'gradient at #P 7 of 8. Here first-order DARTS ends at skip ratio {f_ratio:.2f}; '
        f'the amended arms with a lower ratio: {", ".join(less) or "none"}; higher: '
        f'{", ".join(more) or "none"}. This {verdict} the claim that the amending term '
        f'keeps skip_connect from taking over, in this miniature.')

  # 3. none weight over the search (Fig. 1's red curve).
  trend = []
  for r in rows:
    seeds = [c for c in results['cells'].values() if c['arm'] == r['arm'] and c['epochs']]
    if seeds:
      start = sum(c['epochs'][0]['none_weight'] for c in seeds) / len(seeds)
      end = sum(c['epochs'][-1]['none_weight'] for c in seeds) / len(seeds)
      trend.append(f'{r["arm"]} {start:.3f} → {end:.3f}')
  if trend:
    out.append('Average none weight from the first to the last epoch: ' + '; '.join(trend) +
               '. The paper has it rising monotonically under first-order DARTS (to 0.95 '
               'after 200 epochs).')

  # 4. Test error against random search.
  random_row = arms.get(study.RANDOM)
  scored = sorted((r for r in rows if r['test_error_mean'] is not None),
                  key=lambda r: r['test_error_mean'])
  if scored:
    best = scored[0]
    stds = [r['test_error_std'] for r in scored if r['test_error_std'] is not None]
    noise = (f' The mean seed-to-seed standard deviation is {100 * sum(stds) / len(stds):.2f} '
             'points; differences smaller than that are not resolved by this study.'
             if stds else ' With one seed per arm no difference is resolved.')
    text = f'Lowest mean test error: {best["arm"]} ({_err(best, "%")}).'
    if random_row and random_row['cells']:
      beat = [r['arm'] for r in scored if r['test_error_mean'] < random_row['test_error_mean']]
      text += (f' Random search ({random_row["cells"]} samples): {_err(random_row, "%")}; '
               f'search arms below its mean: {", ".join(beat) or "none"} '
               f'(paper: random 3.29%, first-order 6.18%, amended 2.71%).')
    out.append(text + noise)

  # 5. Super-net accuracy (Section 2.4: amended 91.5% vs first-order 90.5%).
  accs = [(r['arm'], r['supernet_val_acc_mean']) for r in rows
          if r['supernet_val_acc_mean'] is not None]
  if accs:
    top = max(accs, key=lambda a: a[1])
    out.append('Final super-net validation accuracy: ' +
               '; '.join(f'{a} {100 * v:.1f}%' for a, v in accs) +
               f'. Highest: {top[0]} (the paper reports the amended super-net above both '
               'DARTS variants).')

  # 6. The angle claims of Appendix A.3 and Section 2.4.
  diag = [d for c in results['cells'].values() for d in c['diagnostics']]
  if diag:
    nonneg = sum(d['inner_amended'] >= 0 for d in diag)
    darts_neg = sum(d['cos_darts'] < 0 for d in diag)
    cos_a = statistics.median(d['cos_amended'] for d in diag)
    cos_d = statistics.median(d['cos_darts'] for d in diag)
    holds = ('holds at every diagnosed step' if nonneg == len(diag) else
             f'fails at {len(diag) - nonneg} of them')
    out.append(
        f'Over all {len(diag)} diagnosed steps of all arms, ⟨g2′, g2⟩ ≥ 0 at {nonneg} '
        f'(median cos(g2′, g2) {cos_a:.3f}): the paper\'s claim (Appendix A.3) {holds}. '
        f'Second-order DARTS\'s term has median cosine {cos_d:.3f} to g2 and points away '
        f'from it (cos < 0) at {darts_neg}. g2 is the implicit term by damped CG, exact '
        f'only where H is positive definite, i.e. near ω*; the paper\'s proof assumes that.')

  # 7. How much the second-order term steers α.
  ratios = [(r['arm'], r['g2_over_g1_median']) for r in rows
            if r['g2_over_g1_median'] and r['estimator'] != 'first_order']
  if ratios:
    out.append('Median ‖g2‖/‖g1‖ of the estimator\'s own term over the logged steps: ' +
               '; '.join(f'{a} {v:.3g}' for a, v in ratios) +
               '. Above 1 the second-order term, not the validation gradient, steers α.')

  # 8. R-DARTS's signal.
  hess = [r for r in rows if r['hessian_last_mean'] is not None]
  if hess:
    parts = '; '.join(f'{r["arm"]} {r["hessian_first_mean"]:.3g} → {r["hessian_last_mean"]:.3g}'
                      for r in hess)
    sharpest = max(hess, key=lambda r: r['hessian_last_mean'])
    most = max(rows, key=lambda r: _ratio(r) or 0)
    link = ('is also the most collapsed arm' if sharpest['arm'] == most['arm'] else
            f'is not the most collapsed one ({most["arm"]})')
    out.append(f'Dominant eigenvalue of ∇²α L_val, start → end (mean over seeds): {parts}. '
               f'The arm with the largest final value, {sharpest["arm"]}, {link} '
               '(R-DARTS: the eigenvalue grows as DARTS collapses).')

  # 9. The η sweep (Appendix C.1).
  sweep = sorted((r for r in amended if r['eta'] is not None), key=lambda r: r['eta'])
  if len(sweep) > 1:
    out.append('η sweep, final normal cell (#P, skip count): ' +
               '; '.join(f'η={r["eta"]:g} #P {r["num_parametric_mean"]:.1f}, '
                         f'skip {r["skip_count_mean"]:.1f}' for r in sweep) +
               '. The paper (500 epochs, S1) finds small η behaving like first-order DARTS '
               'and large η preferring parameter-free ops (avg-pool in S1).')
  if results['missing']:
    out.append(f'Missing cells (not in these numbers): {", ".join(results["missing"])}.')
  return out


# ------------------------------------------------------------------ figures


def _by_arm(results: dict, field: str) -> dict[str, list[list[dict]]]:
  """arm -> per seed the cell's `field` records, arms in config order."""
  out: dict[str, list[list[dict]]] = {}
  for name in results['arms']:
    seeds = [c[field] for c in results['cells'].values() if c['arm'] == name and c[field]]
    if seeds:
      out[name] = seeds
  return out


def _eta_cells(results: dict) -> list[tuple[str, genotypes.CellGenotype]]:
  """(title, normal cell) of first-order (η = 0) and every amended η, first seed."""
  chosen = []
  for row in results['arms'].values():
    est = row['estimator']
    if est is None or not (est == 'first_order' or est.startswith('amended')):
      continue
    cells = sorted((c for c in results['cells'].values() if c['arm'] == row['arm']),
                   key=lambda c: c['seed'])
    if not cells:
      continue
    c = cells[0]
    eta = 0.0 if est == 'first_order' else c['eta']
    genotype = genotype_text.from_json(json.dumps(c['final']['genotype']))
    normal = next(cell for _, cell in genotypes.named_cells(genotype) if not cell.reduction)
    title = (f'η = {eta:g} ({row["arm"]}, seed {c["seed"]})\n'
             f'test error {100 * c["eval"]["test_error"]:.2f}%, #P {c["final"]["num_parametric"]}')
    chosen.append((eta, title, normal))
  return [(t, n) for _, t, n in sorted(chosen, key=lambda x: x[0])]


def figures(results: dict, folder: str) -> dict[str, str]:
  """Writes the report's figures; returns {name: path relative to the workdir}."""
  from amdarts import plots

  os.makedirs(folder, exist_ok=True)
  out = {}

  def rel(name):
    out[name] = os.path.join(os.path.basename(folder), f'{name}.png')
    return os.path.join(folder, f'{name}.png')

  epochs = _by_arm(results, 'epochs')
  if epochs:
    plots.curves_by_arm(epochs, [
        ('none_weight', 'average weight of none'),
        ('skip_ratio', 'skip_connect among normal-cell ops'),
        ('num_parametric', '#P (parametric ops, normal cell)'),
        ('eval_acc', 'super-net val accuracy (eval mode)'),
        ('train_acc', 'super-net train accuracy')], rel('curves'))
    plots.curves_by_arm(epochs, [
        ('g1_norm', '‖g1‖ (median per epoch)'), ('g2_norm', '‖g2‖ of the estimator'),
        ('g2_over_g1', '‖g2‖ / ‖g1‖')], rel('grad_norms'),
        log_panels=('g1_norm', 'g2_norm', 'g2_over_g1'))
  diag = _by_arm(results, 'diagnostics')
  if diag:
    plots.curves_by_arm(diag, [
        ('cos_amended', 'cos(g2′, g2)'), ('cos_darts', 'cos(g2_DARTS, g2)'),
        ('inner_amended', '⟨g2′, g2⟩')], rel('hypergradient'),
        zero_line=('cos_amended', 'cos_darts', 'inner_amended'))
  hess = _by_arm(results, 'hessian')
  if hess:
    plots.curves_by_arm(hess, [('eigenvalue', 'dominant eigenvalue of ∇²α L_val'),
                               ('residual', 'power-iteration residual')], rel('hessian'),
                        log_panels=('residual',))
  sweep = _eta_cells(results)
  if sweep:
    plots.draw_cells(sweep, rel('eta_sweep'))
  return out


def toy_figure(workdir: str) -> str:
  """Fig. 4: the toy problem's runs (experiments/toy.py's defaults) into W/toy/.

  Returns:
    The PNG's path relative to the workdir.
  """
  import jax

  from amdarts import toy

  folder = os.path.join(workdir, 'toy')
  os.makedirs(folder, exist_ok=True)
  run_kw = dict(steps=200, alpha0=1.0, omega0=-1.0, w_lr=0.1, a_lr=0.05)
  with jax.enable_x64(True):  # As experiments/toy.py: diverging runs stay exact.
    runs = toy.run_all(['first_order', 'darts_second_order', 'amended_exact', 'implicit'],
                       [0.1, 0.25], **run_kw)
  toy.save_json(runs, os.path.join(folder, 'toy.json'), **run_kw)
  toy.plot(runs, os.path.join(folder, 'toy.png'),
           'L = (ωx − α)², x_train = 1, x_val = 2; w_lr = 0.1, a_lr = 0.05')
  return os.path.join('toy', 'toy.png')


# ------------------------------------------------------------------ report.md


def _settings(config, results: dict) -> list[str]:
  s, t, d, m = config.search, config.train, config.data, config.model
  p = results['plan']
  return [
      f'- Data: {d.name}, {study.train_examples(config)} training examples (search: '
      f'halves of {d.train_portion:g}), flip={d.flip}.',
      f'- Space {config.space.name}, edge mode {config.space.edge_mode}, {config.space.steps} '
      f'nodes; search network {config_lib.search_hparams(config).cells} cells, '
      f'C={config_lib.search_hparams(config).c}, regularisers={s.consistent_regularisers}.',
      f'- Search: {s.epochs} epochs × {p["search_steps_per_epoch"]} steps, batch {s.batch_size}; '
      f'ω SGD lr {s.w_lr:g} → {s.w_lr_min:g}; α Adam lr {s.a_lr:g}, betas ({s.a_b1:g}, '
      f'{s.a_b2:g}), L2 {s.a_wd:g}; diagnostics every {s.diag_every} steps (CG '
      f'{s.implicit_maxiter} iterations, ridge {s.implicit_ridge:g}); λ_max every '
      f'{s.hessian_every} epochs ({s.hessian_iters} products).',
      f'- Evaluation: retrain {m.cells} cells, C={m.c}, {t.epochs} epochs, batch {t.batch_size}, '
      f'lr {t.w_lr:g} ({t.w_lr_schedule}), cutout {t.cutout}, drop-path {t.drop_path:g}, '
      f'auxiliary {t.auxiliary}; test error on the test split.',
      f'- Grid: arms {", ".join(config.study.arms)}; seeds {tuple(config.study.seeds)}; '
      f'random search: {config.study.random_samples} samples.',
  ]


def _wall(results: dict) -> list[str]:
  lines = ['| cell | search (s) | median step (s) | retrain (s) | cell (s) | estimated (s) |',
           '|---|---|---|---|---|---|']
  est = {r['cell']: r['search_s'] + r['retrain_s'] for r in results['plan']['cells']}
  total = 0.0
  for key, c in results['cells'].items():
    tm = c['timing']
    cell = tm['search_s'] + tm['retrain_s']
    total += cell
    lines.append(f'| {key} | {tm["search_s"]:.0f} | {_fmt(tm["search_step_s"], ".3f")} | '
                 f'{tm["retrain_s"]:.0f} | {cell:.0f} | {est.get(key, 0):.0f} |')
  lines.append(f'| **all** | | | | **{metrics_lib.format_duration(total)}** | '
               f'{metrics_lib.format_duration(results["plan"]["total_s"])} |')
  return lines


def render(config, results: dict, figure_paths: dict[str, str], toy_path: str | None) -> str:
  """The text of report.md."""
  lines = ['# Stability study', '',
           'Does the amended gradient stop DARTS from collapsing? A miniature of the paper\'s '
           'Table 1, Fig. 1/8, Fig. 4-5, with hypergradient angles and the α-Hessian. '
           'Every number is in `results.json`.', '',
           '## Table 1 in miniature', '']
  lines += table1(results['arms'])
  lines += ['', 'Test error: retrained from scratch with the study\'s short budget, mean ± '
            'sample std over seeds (random search: over its samples). #P, skip count: the '
            'final normal cell. none weight: final average `none` weight over the '
            'normal-cell edges. super-net val acc: eval mode on search-val, last epoch. '
            '—: not applicable (random search trains no super-net). n/a: not measured '
            '(e.g. diagnostics off).', '', '## Hypergradient and curvature', '']
  lines += hypergradient_table(results['arms'])
  lines += ['', 'g2 is the implicit term −∇²αω L_train (H + ridge·I)⁻¹ ∇ω L_val by CG; g2′ '
            'the amended term (eq. 5) and g2_DARTS the second-order DARTS term at the same '
            'ω, α and batches, whatever arm the trajectory belongs to. λ_dom: the '
            'eigenvalue of ∇²α L_val of largest magnitude, signed (power iteration with '
            'exact HVPs, on one fixed search-val batch); it is R-DARTS\'s λ_max where the '
            'Hessian is positive semi-definite, and negative where the largest curvature '
            'is a concave direction.', '',
            '## What the numbers show', '']
  lines += [f'- {s}' for s in findings(results)]
  lines += ['', '## Figures', '']
  names = {'curves': 'Fig. 1 / 8: none weight, skip ratio, #P, super-net accuracy per epoch',
           'eta_sweep': 'Fig. 5: final normal cells of the η sweep (η = 0: first-order)',
           'hypergradient': 'cos(g2′, g2), cos(g2_DARTS, g2), ⟨g2′, g2⟩ per diagnosed step',
           'grad_norms': '‖g1‖, ‖g2‖, ‖g2‖/‖g1‖ per epoch',
           'hessian': 'dominant eigenvalue of ∇²α L_val per epoch'}
  for name, path in figure_paths.items():
    lines.append(f'- [{names[name]}]({path})')
  if toy_path:
    lines.append(f'- [Fig. 4: the toy problem of Appendix A.2]({toy_path}) '
                 '(`experiments/toy.py`; at η = 0.1 the amended run still diverges there)')
  lines += ['', '## Settings', '']
  lines += _settings(config, results)
  lines += ['', '## Wall time', '', 'Seconds of the invocations that finished each phase '
            '(compilation included; an interrupted call is not counted).', '']
  lines += _wall(results)
  lines += ['', f'Estimate from `study.cost` ({results["plan"]["measured"]}).', '']
  return '\n'.join(lines)


def write(config, workdir: str, *, toy: bool | None = None) -> dict:
  """Collects the finished cells and writes results.json, the figures and report.md.

  Args:
    config: the study config.
    workdir: the study's directory.
    toy: also write the toy problem's Fig. 4; None = `config.study.toy`.

  Returns:
    results.json's contents.
  """
  results = study.collect(config, workdir)
  figure_paths = figures(results, os.path.join(workdir, 'figures')) if results['cells'] else {}
  toy_path = toy_figure(workdir) if (config.study.toy if toy is None else toy) else None
  results['figures'] = figure_paths
  study.write_json(os.path.join(workdir, 'results.json'), results)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(render(config, results, figure_paths, toy_path))
  return results


def missing_columns(report_text: str, arms: Sequence[str]) -> dict[str, list[int]]:
  """The empty or 'n/a' columns of each arm's Table 1 row (for tests and checks)."""
  out = {}
  for line in report_text.splitlines():
    cols = [c.strip() for c in line.strip().strip('|').split('|')]
    if cols and cols[0] in arms and len(cols) == 7 and '⟨' not in line:
      bad = [i for i, c in enumerate(cols) if not c or c == 'n/a' or 'nan' in c]
      out.setdefault(cols[0], bad)
  return out
