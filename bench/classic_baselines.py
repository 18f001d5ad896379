#!/usr/bin/env python3
"""Checks `train forecast`'s ETS and Theta baselines against statsmodels on the same points.

For each series, runs `recurrent train forecast` (which refits its ETS and Theta at every
rolling origin and writes them to the forecast CSV), then refits statsmodels' ETSModel
(additive errors; trend none / additive / damped; seasonality none / additive; best AIC)
and ThetaModel (deseasonalised when seasonal) on exactly the history before each origin,
and prints both RMSEs (MSE for one-step horizons) side by side.

    python bench/classic_baselines.py --data-dir ../shared/data [--binary target/release/recurrent]

Needs numpy, pandas and statsmodels (a virtualenv outside the repository).
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.forecasting.theta import ThetaModel

# (name, file under the data folder, target column, horizon, test size, restrict to rows)
SERIES = [
    ("airline", "airline/airline.csv", None, 12, 12, None),
    ("shampoo", "shampoo/shampoo.csv", "sales", 3, 6, None),
    ("realgdp", "macrodata/macrodata.csv", "realgdp", 4, 12, None),
    ("sunspots 1700-1987", "sunspots/sunspots.csv", None, 1, 67, 288),
]


def statsmodels_ets(history, season, horizon):
    best = None
    for trend, damped in [(None, False), ("add", False), ("add", True)]:
        for seasonal in [None, "add"] if season > 1 and len(history) >= 2 * season else [None]:
            try:
                fit = ETSModel(history, error="add", trend=trend, damped_trend=damped,
                               seasonal=seasonal, seasonal_periods=season if seasonal else None
                               ).fit(disp=False)
            except Exception:
                continue
            if best is None or fit.aic < best.aic:
                best = fit
    return best.forecast(horizon)


def statsmodels_theta(history, season, horizon):
    seasonal = season > 1 and len(history) >= 2 * season
    fit = ThetaModel(history, period=season if seasonal else 1, deseasonalize=seasonal).fit()
    return np.asarray(fit.forecast(horizon))


def score(truth, pred, horizon):
    errors = [(t - p) ** 2 for t, p in zip(truth, pred)]
    mse = sum(errors) / len(errors)
    return ("MSE", mse) if horizon == 1 else ("RMSE", math.sqrt(mse))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "recurrent"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    print("| series | ours ETS | statsmodels ETS | ours Theta | statsmodels Theta |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, target, horizon, test_size, rows in SERIES:
            src = os.path.join(args.data_dir, path)
            if rows is not None:
                with open(src) as f:
                    lines = f.readlines()[: rows + 1]
                src = os.path.join(tmp, "series.csv")
                with open(src, "w") as f:
                    f.writelines(lines)
            out = os.path.join(tmp, "f.csv")
            cmd = [args.binary, "train", "forecast", "--data", src, "--horizon", str(horizon),
                   "--test-size", str(test_size), "--quiet", "--epochs", "1", "--ensemble", "1",
                   "--out", os.path.join(tmp, "m.st"), "--report", os.path.join(tmp, "r.json"),
                   "--forecast-csv", out, "--forecast-plot", os.path.join(tmp, "f.png")]
            if target:
                cmd += ["--target", target]
            subprocess.run(cmd, check=True)
            with open(os.path.join(tmp, "r.json")) as f:
                season = json.load(f)["season"]
            with open(src) as f:
                table = list(csv.DictReader(f))
            column = target or list(table[0].keys())[1]
            y = np.array([float(r[column]) for r in table])
            with open(out) as f:
                points = list(csv.DictReader(f))
            index = [r[list(table[0].keys())[0]] for r in table]
            truth, ours_ets, ours_theta, sm_ets, sm_theta = [], [], [], [], []
            by_origin = {}
            for p in points:
                by_origin.setdefault(p["origin"], []).append(p)
            for origin, group in by_origin.items():
                o = index.index(origin)
                e = statsmodels_ets(y[:o], season, horizon)
                t = statsmodels_theta(y[:o], season, horizon)
                for h, p in enumerate(group):
                    truth.append(float(p["truth"]))
                    ours_ets.append(float(p["ets"]))
                    ours_theta.append(float(p["theta"]))
                    sm_ets.append(float(e[h]))
                    sm_theta.append(float(t[h]))
            cells = [score(truth, v, horizon) for v in (ours_ets, sm_ets, ours_theta, sm_theta)]
            kind = cells[0][0]
            print(f"| {name} ({kind}) | " + " | ".join(f"{v:.1f}" for _, v in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
