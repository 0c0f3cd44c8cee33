"""Depth vs width on language modelling (``configs/lm_depth_vs_width.py``): the learning rate of
each family and depth chosen on validation, and the rules its verdicts follow.

The claim: fewer, wider layers beat many narrow ones at a fixed parameter budget *because they
better approximate the continuous process*. Rules, fixed before the test runs (margin
:data:`MARGIN` nats per character; Student-t 95% intervals over seeds 0-4, paired by seed):

- *Outcome, equal parameters*: for gpt at each budget, the paired differences of test loss
  ``deep - shallow``, deep = 8 layers, shallow = 1 and 2 layers, each (no shallow depth is
  selected). **Reproduced** if every interval lies above the margin (each shallow model beats the
  deep one); **not supported** if every interval lies below minus the margin (the deep model
  wins) or every one inside ±margin (no difference); else **inconclusive**. The same contrasts
  are reported for the ODE families.
- *Outcome, equal FLOPs*: the same rule for the tied ODE at a gpt's width (about equal FLOPs across
  its depths), 8 steps against 1 and 2.
- *Mechanism*: a model's distance from a flow, on one scale across depths K, is ``update_change``
  for gpt (the relative change between adjacent layers' updates ``W_k - W_k(0)``, times K: random
  initial layers differ by about sqrt(2) at any depth, and smooth updates by O(1/K)) and, for the
  ODE families, K times ``|val_loss@train:x2 - val_loss@train|`` (an Euler solve's error shrinks as
  1/K, so K times its change on halving the step estimates the error constant). At each budget and
  family: the Spearman correlation of distance with validation loss *within depths* (both ranked
  after subtracting each depth's mean, so depth itself, which moves both, is held fixed), with a
  95% percentile-bootstrap interval that resamples seeds within each depth (2,000 resamples); and
  the mean distance at the family's best depth (lowest mean validation loss) and at depth 8. A
  family *supports* the mechanism if at every budget the interval lies above 0 (closer to a flow,
  lower loss) and its best depth is at most as far from a flow as depth 8; it *contradicts* it if
  at every budget the interval lies below 0, or at every budget its best depth is the farther.
  A best depth without a distance (a 1-layer gpt approximates no continuous process) neither
  supports nor contradicts. **Reproduced** if the gpt outcome is reproduced (there is an advantage
  to explain), some family supports the mechanism and none contradicts it; **not supported** if
  every family contradicts it; else **inconclusive**.
- *The families*: ``family - gpt`` test loss paired by seed, at each budget. At equal parameters
  each family at its depth chosen on the pilot (:data:`BEST_DEPTHS`: lowest pilot validation loss
  at the chosen learning rate, so the test seeds do not pick the depths they judge; the ODE families
  at depth 2 or more, since at depth 1 the tied ODE is the 1-layer gpt); at equal
  FLOPs, at each depth K >= 2, the family at gpt-K's width against gpt-K. Per family and
  comparison: **the family is better** if every interval lies below minus the margin, **gpt is
  better** if every one lies above the margin, **no difference** if every one lies inside ±margin,
  else **inconclusive**.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odeformer.analysis.protocol import MeanCI, format_ci, lowest, mean_ci, select_by_validation, side
from odeformer.analysis.tables import FAMILY_ORDER, fewer_heads, lm_depth, ok_rows

MARGIN = 0.01  # nats per character
# family -> its depth at equal parameters chosen on the pilot (best_depths of the committed pilot table;
# a test checks), for the families' comparison at equal parameters.
BEST_DEPTHS: dict[str, int] = {"gpt": 1, "ode": 2, "smooth": 2}
RESAMPLES = 2000


def with_depth(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``depth`` (gpt's layers, the ODE families' solver steps) and ``kind``
    (``params``: width resolved from the budget; ``flops``: at a gpt's width)."""
    out = table.copy()
    out["depth"] = lm_depth(out)
    out["kind"] = np.where(out["model.param_budget"] > 0, "params", "flops")
    return out


def choose_learning_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm (family, depth, kind), the learning rate with the lowest validation loss averaged
    over the pilot's runs (one seed at each pilot budget); ``at_edge`` marks a choice at the end of
    the grid tried for that arm (the grid must then be extended there).

    Returns:
      Columns ``model.family``, ``depth``, ``kind``, ``learning_rate``, ``val_loss``, ``at_edge``,
      ``tried``, in the order of the config's arms.
    """
    table = with_depth(table)
    keys = ["model.family", "depth", "kind"]
    chosen = select_by_validation(table, keys, axis="train.learning_rate", metric="val_loss",
                                  report=("val_loss",))
    rows = []
    for (family, depth, kind), runs in chosen.groupby(keys, sort=False):
        rate = float(runs["chosen_train.learning_rate"].iloc[0])
        mine = (table["model.family"] == family) & (table["depth"] == depth) & (table["kind"] == kind)
        tried = sorted(table.loc[mine, "train.learning_rate"].unique())
        rows.append({"model.family": family, "depth": int(depth), "kind": kind, "learning_rate": rate,
                     "val_loss": float(runs["val_loss_mean"].iloc[0]),
                     "at_edge": rate in (tried[0], tried[-1]), "tried": ", ".join(f"{r:g}" for r in tried)})
    out = pd.DataFrame(rows)
    order = out["kind"].map({"params": 0, "flops": 1}) * 100 + out["model.family"].map(FAMILY_ORDER) * 10
    return out.iloc[np.argsort((order + out["depth"]).to_numpy(), kind="stable")].reset_index(drop=True)


def render_choice(table: pd.DataFrame) -> str:
    """The docs block of the learning-rate pilot: the grid's mean validation loss per family,
    depth and rate, and the choice."""
    table = with_depth(table)
    choice = choose_learning_rates(table)
    rates = sorted(table["train.learning_rate"].unique())
    done = table[table["status"] == "ok"]
    seeds = ", ".join(str(int(s)) for s in sorted(table["seed"].unique()))
    budgets = ", ".join(f"{int(b):,}" for b in sorted(table["model.param_budget"].unique()) if b > 0)
    lines = [f"Runs: {len(done)} finished of {len(table)} recorded (seed {seeds}; budgets {budgets}, the "
             "equal-FLOPs arms at the widths of those budgets' gpt); mean validation loss over the budgets, "
             "nats per character:",
             "",
             "| family | depth | arm | " + " | ".join(f"lr {r:g}" for r in rates) + " | chosen |",
             "|---|---|---|" + "---|" * len(rates) + "---|"]
    for _, row in choice.iterrows():
        runs = done[(done["model.family"] == row["model.family"]) & (done["depth"] == row["depth"])
                    & (done["kind"] == row["kind"])]
        means = runs.groupby("train.learning_rate")["val_loss"].mean()
        cells = [(f"**{means[r]:.4f}**" if r == row["learning_rate"] else f"{means[r]:.4f}") if r in means
                 else "" for r in rates]
        edge = " (edge of the grid)" if row["at_edge"] else ""
        lines.append(f"| {row['model.family']} | {row['depth']} | {_KIND[row['kind']]} | "
                     f"{' | '.join(cells)} | {row['learning_rate']:g}{edge} |")
    depths = ", ".join(f"{family} {depth}" for family, depth in best_depths(table).items())
    lines += ["", f"Each family's depth at equal parameters, lowest validation loss at its chosen rate (the "
              f"families are compared at these depths; the ODE families at 2 or more, since at depth 1 the "
              f"tied ODE is the 1-layer gpt): {depths}.", "", heads_line(table)]
    return "\n".join(lines)


# --- the main sweep --------------------------------------------------------------------------------

def arms(table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs with ``depth``, ``budget`` and ``kind``: ``params`` for an arm whose
    width was resolved from its budget, ``flops`` for one at a gpt's width, whose budget is then
    that gpt's (the gpt run of the same depth, width and heads)."""
    done = with_depth(ok_rows(table))
    gpt = done[(done["model.family"] == "gpt") & (done["kind"] == "params")]
    shape = ["depth", "shape.width", "shape.heads"]
    budget_of = {tuple(key): b for *key, b in gpt[[*shape, "model.param_budget"]].itertuples(index=False)}
    done["budget"] = [b if k == "params" else budget_of.get(tuple(key), np.nan)
                      for b, k, *key in done[["model.param_budget", "kind", *shape]].itertuples(index=False)]
    return done


def heads_line(table: pd.DataFrame) -> str:
    """The sentence naming the arms with fewer attention heads (``tables.fewer_heads``)."""
    return _heads_line(arms(table))


def _heads_line(done: pd.DataFrame) -> str:
    where = [(f"{b:,.0f} parameters" if k == "params" else f"equal FLOPs at {b:,.0f}") if b == b
             else "equal FLOPs" for b, k in zip(done["budget"], done["kind"], strict=True)]
    return fewer_heads(done, pd.Series(where, index=done.index))


def _per_seed(runs: pd.DataFrame, metric: str) -> pd.Series:
    if runs["seed"].duplicated().any():
        raise ValueError("several runs of one arm at one seed")
    return runs.set_index("seed")[metric]


def contrasts(table: pd.DataFrame, family: str, kind: str, budget: float) -> list[dict]:
    """``deep - shallow`` test loss, paired by seed, of depth 8 against each shallow depth (1 and
    2; the smooth family has no depth 1). For ``kind="flops"`` depth 1 is the budget arm (a
    1-step ODE has its gpt's width at equal parameters). No shallow depth is selected, so none is
    favoured by the data it is then compared on."""
    return _contrasts(arms(table), family, kind, budget)


def _contrasts(done: pd.DataFrame, family: str, kind: str, budget: float) -> list[dict]:
    done = done[(done["model.family"] == family) & (done["budget"] == budget)]

    def arm(depth):
        kinds = ("params",) if kind == "params" or depth == 1 else ("flops",)
        return done[(done["depth"] == depth) & done["kind"].isin(kinds)]

    out = []
    if not len(arm(8)):  # a table without depth 8 (a tiny variant) has no contrast
        return out
    deep = _per_seed(arm(8), "test_loss")
    for shallow in (d for d in (1, 2) if len(arm(d))):
        base = _per_seed(arm(shallow), "test_loss")
        seeds = deep.index.intersection(base.index)
        out.append({"family": family, "kind": kind, "budget": budget, "shallow": shallow,
                    "ci": mean_ci((deep[seeds] - base[seeds]).to_numpy()),
                    "unpaired": len(deep) + len(base) - 2 * len(seeds)})
    return out


_WINNER = {"above": "shallow", "below": "deep", "inside": "none", "straddles": "unknown"}


def _side(ci: MeanCI) -> str:
    """Which depth a ``deep - shallow`` interval favours beyond the margin."""
    return _WINNER[side(ci, MARGIN)]


def outcome(rows: list[dict]) -> str:
    """The outcome rule over one family's contrasts at every budget and shallow depth (an
    intersection-union test: the shallow models win only if each beats depth 8)."""
    sides = {_side(r["ci"]) for r in rows}
    if sides == {"shallow"}:
        return "**reproduced**"
    if sides in ({"deep"}, {"none"}):
        return "**not supported**"
    return "**inconclusive**"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def distance(done: pd.DataFrame) -> pd.Series:
    """Each run's distance from a flow on one scale across depths (the module docstring)."""
    resolve = done["depth"] * (done["val_loss@train:x2"] - done["val_loss@train"]).abs()
    gpt = done["model.family"] == "gpt"
    return pd.Series(np.where(gpt, done["update_change"], resolve), index=done.index)


def _within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``values`` less the mean of their group."""
    out = values.astype(float).copy()
    for g in np.unique(groups):
        out[groups == g] -= out[groups == g].mean()
    return out


def closeness(table: pd.DataFrame, family: str, budget: float, seed: int = 0) -> dict:
    """Within-depth Spearman correlation of distance from a flow with validation loss over the
    family's models at ``budget`` (equal parameters), its bootstrap interval (seeds resampled
    within each depth), and the mean distance at the best depth and at depth 8."""
    return _closeness(arms(table), family, budget, seed)


def _closeness(done: pd.DataFrame, family: str, budget: float, seed: int = 0) -> dict:
    done = done[(done["model.family"] == family) & (done["budget"] == budget)
                & (done["kind"] == "params")]
    done = done.assign(distance=distance(done))
    means = done.groupby("depth")[["val_loss", "distance"]].mean()
    best = int(lowest(means["val_loss"], f"validation loss of {family} at budget {budget}"))
    done = done[np.isfinite(done["distance"])]
    x, y, depth = (done[c].to_numpy(float) for c in ("distance", "val_loss", "depth"))
    rng = np.random.default_rng(seed)
    rows = [np.flatnonzero(depth == d) for d in np.unique(depth)]

    def rho(index):
        return spearman(_within(x[index], depth[index]), _within(y[index], depth[index]))

    draws = [rho(np.concatenate([rng.choice(r, len(r)) for r in rows])) for _ in range(RESAMPLES)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return {"family": family, "budget": budget, "n": len(x), "rho": rho(np.arange(len(x))),
            "low": float(low), "high": float(high), "best_depth": best,
            "best_distance": float(means.loc[best, "distance"]),
            "deep_distance": float(means["distance"].get(8, np.nan))}


def mechanism(rows: list[dict], outcome_verdict: str) -> str:
    """The mechanism rule over every family's :func:`closeness` at every budget, given the gpt
    outcome's verdict."""
    verdicts = {}
    for family in {r["family"] for r in rows}:
        mine = [r for r in rows if r["family"] == family]
        if all(r["low"] > 0 and r["best_distance"] <= r["deep_distance"] for r in mine):
            verdicts[family] = "supports"  # NaN distances compare False: never support
        elif all(r["high"] < 0 for r in mine) or all(r["best_distance"] > r["deep_distance"] for r in mine):
            verdicts[family] = "contradicts"
        else:
            verdicts[family] = "neither"
    if ("supports" in verdicts.values() and "contradicts" not in verdicts.values()
            and outcome_verdict == "**reproduced**"):
        return "**reproduced**"
    if set(verdicts.values()) == {"contradicts"}:
        return "**not supported**"
    return "**inconclusive**"


def best_depths(pilot: pd.DataFrame) -> dict[str, int]:
    """Each family's depth at equal parameters with the lowest pilot validation loss, at the learning
    rate chosen for it (:func:`choose_learning_rates`; ties: the shallower): chosen on the pilot's
    seed, so the test seeds that judge the families did not pick their depths. The ODE families
    choose among depths of at least 2: at depth 1 the tied ODE is the 1-layer gpt itself."""
    choice = choose_learning_rates(pilot)
    flows = (choice["model.family"] == "gpt") | (choice["depth"] >= 2)
    choice = choice[(choice["kind"] == "params") & flows]
    out = {}
    for family, rows in choice.groupby("model.family", sort=False):
        out[family] = int(lowest(rows.set_index("depth")["val_loss"], f"pilot validation loss of {family}"))
    return dict(sorted(out.items(), key=lambda kv: FAMILY_ORDER[kv[0]]))


def family_contrasts(table: pd.DataFrame, family: str, kind: str, budget: float,
                     depths: dict[str, int] | None = None) -> list[dict]:
    """``family - gpt`` test loss, paired by seed, at ``budget``.

    ``kind="params"``: each family at its depth in ``depths`` (default :data:`BEST_DEPTHS`, chosen
    on the pilot: :func:`best_depths`), both at equal parameters; none without a chosen depth.
    ``kind="flops"``: at each depth K >= 2, the family at gpt-K's width (equal FLOPs per token,
    fewer parameters for the tied ODE) against gpt-K; the smooth family at K <= 4 has that width
    at equal parameters already. A pair one of whose arms has no finished run is left out."""
    return _family_contrasts(arms(table), family, kind, budget, depths)


def _family_contrasts(done: pd.DataFrame, family: str, kind: str, budget: float,
                      depths: dict[str, int] | None = None) -> list[dict]:
    depths = BEST_DEPTHS if depths is None else depths
    done = done[done["budget"] == budget]
    gpt = done[(done["model.family"] == "gpt") & (done["kind"] == "params")]
    mine = done[done["model.family"] == family]
    if kind == "params":
        mine = mine[mine["kind"] == "params"]
        pairs = [(depths[family], depths["gpt"])] if family in depths and "gpt" in depths else []
    else:
        narrow = mine[mine["kind"] == "flops"]
        wide = mine[(mine["kind"] == "params") & ~mine["depth"].isin(narrow["depth"])]
        same_width = wide[wide["shape.width"].to_numpy() == wide["depth"].map(
            gpt.groupby("depth")["shape.width"].first()).to_numpy()]
        mine = pd.concat([narrow, same_width])
        pairs = [(k, k) for k in sorted(set(mine["depth"]) & set(gpt["depth"])) if k >= 2]
    out = []
    for depth, gpt_depth in pairs:
        ours = _per_seed(mine[mine["depth"] == depth], "test_loss")
        theirs = _per_seed(gpt[gpt["depth"] == gpt_depth], "test_loss")
        if ours.empty or theirs.empty:  # an arm without a finished run (the arms' table shows which)
            continue
        seeds = ours.index.intersection(theirs.index)
        if seeds.empty:
            raise ValueError(f"{family} at depth {depth} and gpt at depth {gpt_depth} ({kind}, budget "
                             f"{budget:,.0f}) share no finished seed")
        out.append({"family": family, "kind": kind, "budget": budget, "depth": depth, "gpt_depth": gpt_depth,
                    "ci": mean_ci((ours[seeds] - theirs[seeds]).to_numpy()),
                    "unpaired": len(ours) + len(theirs) - 2 * len(seeds)})
    return out


_FAMILY_WINNER = {"above": "gpt", "below": "family", "inside": "none", "straddles": "unknown"}


def family_verdict(rows: list[dict]) -> str:
    """Which family wins every ``family - gpt`` contrast beyond the margin: the family, gpt, neither
    (every interval inside the margin), or **inconclusive** (mixed, or an interval straddling it)."""
    sides = {_FAMILY_WINNER[side(r["ci"], MARGIN)] for r in rows}
    if not rows or len(sides) != 1 or sides == {"unknown"}:
        return "**inconclusive**"
    family = rows[0]["family"]
    return {"gpt": "**gpt is better**", "family": f"**{family} is better**",
            "none": "**no difference**"}[sides.pop()]


_KIND = {"params": "equal params", "flops": "equal FLOPs"}


def _number(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:.4f}"


def render(table: pd.DataFrame) -> str:
    """The docs block of the main sweep: every arm's losses, costs and closeness, the contrasts,
    the correlations and the verdicts."""
    done = arms(table)
    budgets = sorted(done["budget"].dropna().unique())
    first = done[(done["model.family"] == "gpt") & (done["depth"] == 1)]
    gpt1 = first.groupby("budget")["flops_per_token"].mean()

    def ratio(flops, base):
        return "—" if base is None else f"{flops / base:.2f}"  # no 1-layer gpt at this budget
    lines = [f"Runs: {len(done)} finished of {len(table)} recorded; validation and test loss over the whole "
             "splits (nats per character), Student-t 95% intervals over seeds; FLOPs per token forward "
             "(odeformer.language.flops), relative to the 1-layer gpt of the budget.", "",
             "| budget | arm | family | depth | width (heads) | parameters | FLOPs ÷ gpt-1 | lr | seeds | "
             "val loss | test loss | layer change | distance from a flow |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = done.groupby(["budget", "kind", "model.family", "depth"]).size().index
    for budget, kind, family, depth in sorted(keys, key=lambda k: (k[0], k[1] != "params",
                                                                   FAMILY_ORDER[k[2]], k[3])):
        runs = done[(done["budget"] == budget) & (done["kind"] == kind)
                    & (done["model.family"] == family) & (done["depth"] == depth)]
        change = runs["layer_change"].mean()
        far = distance(runs)
        resolve = format_ci(mean_ci(far), 3) if np.isfinite(far).all() else "—"
        lines.append(
            f"| {int(budget):,} | {_KIND[kind]} | {family} | {depth} | "
            f"{int(runs['shape.width'].iloc[0])} ({int(runs['shape.heads'].iloc[0])}) | "
            f"{int(runs['params'].mean()):,} | {ratio(runs['flops_per_token'].mean(), gpt1.get(budget))} | "
            f"{runs['train.learning_rate'].iloc[0]:g} | {len(runs)} | "
            f"{format_ci(mean_ci(runs['val_loss']))} | "
            f"{format_ci(mean_ci(runs['test_loss']))} | {'—' if np.isnan(change) else f'{change:.3f}'} | "
            f"{resolve} |")
    results = {}
    contrast_lines = ["| family | compared at | budget | shallow | pairs (unpaired) | "
                      "depth 8 − shallow (test loss) |", "|---|---|---|---|---|---|"]
    for family, kind in (("gpt", "params"), ("ode", "params"), ("smooth", "params"), ("ode", "flops")):
        rows = [r for b in budgets for r in _contrasts(done, family, kind, b)]
        results[family, kind] = outcome(rows)
        for r in rows:
            contrast_lines.append(f"| {family} | {_KIND[kind]} | {int(r['budget']):,} | {r['shallow']} | "
                                  f"{r['ci'].n} ({r['unpaired']}) | {format_ci(r['ci'], 4, True)} |")
    family_lines = ["| family | compared at | budget | its depth | gpt's depth | pairs (unpaired) | "
                    "family − gpt (test loss) |", "|---|---|---|---|---|---|---|"]
    versus = {}
    for family, kind in (("ode", "params"), ("smooth", "params"), ("ode", "flops"), ("smooth", "flops")):
        rows = [r for b in budgets for r in _family_contrasts(done, family, kind, b)]
        versus[family, kind] = family_verdict(rows)
        for r in rows:
            family_lines.append(f"| {family} | {_KIND[kind]} | {int(r['budget']):,} | {r['depth']} | "
                                f"{r['gpt_depth']} | {r['ci'].n} ({r['unpaired']}) | "
                                f"{format_ci(r['ci'], 4, True)} |")
    corr = [_closeness(done, f, b) for f in ("gpt", "ode", "smooth") for b in budgets]
    corr_lines = ["| family | budget | models | Spearman ρ within depths (distance, val loss) | "
                  "best depth | its distance | depth 8's distance |", "|---|---|---|---|---|---|---|"]
    for r in corr:
        corr_lines.append(f"| {r['family']} | {int(r['budget']):,} | {r['n']} | "
                          f"{r['rho']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] | {r['best_depth']} | "
                          f"{_number(r['best_distance'])} | {_number(r['deep_distance'])} |")
    return "\n".join([
        *lines, "", "Test loss of depth 8 minus that of depth 1 and of depth 2, each paired by seed "
        f"(positive: the shallow model wins; margin {MARGIN}):", "", *contrast_lines, "",
        "The ODE families against gpt, test loss paired by seed (negative: the ODE family wins): at equal "
        "parameters each family at the depth its pilot chose; at equal FLOPs at gpt's width and depth:",
        "", *family_lines, "",
        "Closeness to a flow against validation loss at each budget (equal parameters; seeds resampled "
        "within depths):", "", *corr_lines, "", _heads_line(done), "",
        f"- Fewer, wider layers beat many narrow ones at equal parameters (gpt): {results['gpt', 'params']}.",
        f"- The same within the tied ODE at equal parameters: {results['ode', 'params']}; at equal FLOPs: "
        f"{results['ode', 'flops']}; within the smooth ODE: {results['smooth', 'params']}.",
        f"- Because they better approximate the continuous process: "
        f"{mechanism(corr, results['gpt', 'params'])}.",
        f"- Tied ODE against gpt at equal parameters: {versus['ode', 'params']}; at equal FLOPs: "
        f"{versus['ode', 'flops']}.",
        f"- Smooth ODE against gpt at equal parameters: {versus['smooth', 'params']}; at equal FLOPs: "
        f"{versus['smooth', 'flops']}.",
    ])
