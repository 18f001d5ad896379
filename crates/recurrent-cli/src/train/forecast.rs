//! `recurrent train forecast`.

use super::{say, CliProgress, CommonArgs, Defaults};
use clap::Args;
use rand::SeedableRng;
use recurrent::data::{parse_series_csv, read_series_csv, MissingValues, SeriesTable};
use recurrent::kernels::Precision;
use recurrent::models::{
    backtest, baselines, detect_season, fit_ensemble, merge_reports, Backtest, ClassicForecasts,
    ForecastMeta, ForecastMethod, ForecastTask, Forecaster, ForecasterEnsemble, Transform,
    NETWORK_EVIDENCE,
};
use recurrent::{Error, Result};
use std::path::PathBuf;

/// Defaults of `train forecast`. The hidden size was chosen on airline, shampoo, realgdp
/// and sunspots over seeds 0-2 by the geometric mean of the network's test RMSE relative
/// to ETS (`docs/experiments.md`): 0.97 with 32 units, 0.90 with 64, 0.92 with 128.
const DEFAULTS: Defaults = Defaults {
    hidden_size: 64,
    num_layers: 1,
    bidirectional: false,
    dropout: 0.0,
    epochs: 300,
    batch_size: 16,
    lr: 3e-3,
    patience: 40,
    out: "forecaster.safetensors",
    precision: Precision::F32,
};

/// Options of `train forecast`.
#[derive(Args, Debug, Clone)]
pub struct ForecastArgs {
    /// CSV with a header: optional date column, numeric columns (default: the bundled
    /// airline passengers series, with `--horizon 12`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Column to forecast (optional when the file has one numeric column).
    #[arg(long)]
    pub target: Option<String>,
    /// Steps ahead forecast from each origin (default 1; 12 for the bundled data).
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub horizon: Option<usize>,
    /// Points held out at the end and forecast with a rolling origin (default: the horizon).
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub test_size: Option<usize>,
    /// Other columns whose past values are model inputs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub inputs: Vec<String>,
    /// Fill missing values by linear interpolation instead of failing.
    #[arg(long)]
    pub interpolate: bool,
    /// Seasonal period (default: detected from the autocorrelation of the training part).
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub season: Option<usize>,
    /// Past steps the model sees (default: two seasons, at least 16, at most half the
    /// training part).
    #[arg(long, value_parser = crate::check::positive, allow_negative_numbers = true)]
    pub window: Option<usize>,
    /// Models trained from consecutive seeds whose forecasts are averaged (1 to 1000).
    #[arg(long, default_value_t = 5, value_parser = crate::check::ensemble_size, allow_negative_numbers = true)]
    pub ensemble: usize,
    /// Where to write the held-out forecast as CSV.
    #[arg(long, default_value = "forecast.csv")]
    pub forecast_csv: PathBuf,
    /// Where to draw history, truth and forecast as PNG.
    #[arg(long, default_value = "forecast.png")]
    pub forecast_plot: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

struct Errors {
    rmse: f64,
    mae: f64,
    mape: f64,
    mse: f64,
}

fn errors(truth: &[f32], pred: &[f32]) -> Errors {
    let n = truth.len().max(1) as f64;
    let mse = truth
        .iter()
        .zip(pred)
        .map(|(t, p)| ((t - p) as f64).powi(2))
        .sum::<f64>()
        / n;
    let mae = truth
        .iter()
        .zip(pred)
        .map(|(t, p)| ((t - p) as f64).abs())
        .sum::<f64>()
        / n;
    let nz: Vec<(f32, f32)> = truth
        .iter()
        .zip(pred)
        .filter(|(t, _)| **t != 0.0)
        .map(|(t, p)| (*t, *p))
        .collect();
    let mape = 100.0
        * nz.iter()
            .map(|(t, p)| ((t - p) / t).abs() as f64)
            .sum::<f64>()
        / nz.len().max(1) as f64;
    Errors {
        rmse: mse.sqrt(),
        mae,
        mape,
        mse,
    }
}

/// Runs `train forecast`.
pub fn run(a: ForecastArgs) -> Result<()> {
    let c = &a.common;
    let inputs: Vec<crate::paths::Named> = a.data.iter().map(|p| ("--data", p.as_path())).collect();
    let task_outputs: [crate::paths::Named; 2] = [
        ("--forecast-csv", &a.forecast_csv),
        ("--forecast-plot", &a.forecast_plot),
    ];
    c.check_paths(&DEFAULTS, &inputs, &task_outputs, Some(a.ensemble))?;
    let missing = if a.interpolate {
        MissingValues::Interpolate
    } else {
        MissingValues::Error
    };
    let (table, bundled): (SeriesTable, bool) = match &a.data {
        Some(p) => (read_series(p, a.interpolate)?, false),
        None => (
            parse_series_csv(
                include_str!("../../../../data/airline/airline.csv"),
                "bundled airline.csv",
                missing,
            )?,
            true,
        ),
    };
    let target = match (&a.target, table.columns.len()) {
        (Some(t), _) => t.clone(),
        (None, 1) => table.columns[0].clone(),
        (None, _) => {
            return Err(Error::Invalid(format!(
                "the file has several numeric columns ({}); choose one with --target",
                table.columns.join(", ")
            )))
        }
    };
    let target_col = table.column(&target)?;
    let input_cols = a
        .inputs
        .iter()
        .map(|n| table.column(n))
        .collect::<Result<Vec<_>>>()?;
    let horizon = a.horizon.unwrap_or(if bundled { 12 } else { 1 });
    let test_size = a.test_size.unwrap_or(horizon);
    let n = table.len();
    let mut raw: Vec<Vec<f32>> = vec![table.values[target_col].clone()];
    raw.extend(input_cols.iter().map(|&i| table.values[i].clone()));
    if n.checked_sub(test_size)
        .and_then(|r| r.checked_sub(horizon.saturating_mul(2)))
        .filter(|&r| r >= 8)
        .is_none()
    {
        return Err(Error::Invalid(format!(
            "series {target:?} has {n} points: too short to hold out {test_size} and learn {horizon}-step forecasts (needs at least {})",
            test_size.saturating_add(horizon.saturating_mul(2)).saturating_add(8)
        )));
    }
    let train_len = n - test_size;
    let transform = Transform::for_series(&raw[0]);
    let transformed_train: Vec<f32> = raw[0][..train_len]
        .iter()
        .map(|&v| transform.apply(v))
        .collect();
    let season = a
        .season
        .unwrap_or_else(|| detect_season(&transformed_train, (train_len / 3).min(400)))
        .max(1);
    let max_window = (train_len - horizon) / 2;
    let window = match a.window {
        Some(w) if w > max_window => {
            return Err(Error::Invalid(format!(
                "--window {w} is longer than half the {} points available for training windows (at most {max_window})",
                train_len - horizon
            )))
        }
        Some(w) => w,
        None => season.saturating_mul(2).max(16).min(max_window).max(1),
    };

    // Scaling from the training part only.
    let stats = |v: &[f32]| {
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let s = (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        (m as f32, if s > 1e-8 { s as f32 } else { 1.0 })
    };
    let mut mean = Vec::new();
    let mut std = Vec::new();
    for (ci, col) in raw.iter().enumerate() {
        let part: Vec<f32> = if ci == 0 {
            transformed_train.clone()
        } else {
            col[..train_len].to_vec()
        };
        let (m, s) = stats(&part);
        mean.push(m);
        std.push(s);
    }
    let mut meta = ForecastMeta {
        target: target.clone(),
        inputs: a.inputs.clone(),
        horizon,
        window,
        season,
        transform,
        seasonal_base: vec![false; horizon],
        seasonal_indices: Vec::new(),
        first_row: table.index.first().cloned().unwrap_or_default(),
        mean,
        std,
        residual_scale: 1.0,
        method: ForecastMethod::Network,
    };
    let cols_all: Vec<Vec<f32>> = raw
        .iter()
        .enumerate()
        .map(|(ci, col)| col.iter().map(|&v| meta.transform(ci, v)).collect())
        .collect();
    let cols_train: Vec<Vec<f32>> = cols_all.iter().map(|c| c[..train_len].to_vec()).collect();
    let ends: Vec<usize> = (window - 1..train_len - horizon).collect();
    if ends.len() < 4 {
        return Err(Error::Invalid(format!(
            "only {} training windows; use a shorter --window or more data",
            ends.len()
        )));
    }
    // Per horizon step, the baseline that fits the training part better.
    for h in 1..=horizon {
        let err = |seasonal: bool| {
            let mut m2 = meta.clone();
            m2.seasonal_base[h - 1] = seasonal;
            ends.iter()
                .map(|&t| (cols_train[0][t + h] - m2.base(&cols_train[0], t, h)).abs() as f64)
                .sum::<f64>()
        };
        meta.seasonal_base[h - 1] = season > 1 && err(true) < err(false);
    }
    // What the network learns: the target less `m`'s baseline, every window and step.
    let residuals_of = |m: &ForecastMeta| -> Vec<f32> {
        ends.iter()
            .flat_map(|&t| (1..=horizon).map(move |h| (t, h)))
            .map(|(t, h)| cols_train[0][t + h] - m.base(&cols_train[0], t, h))
            .collect()
    };
    // A seasonal series is deseasonalised (window and baseline) when that baseline fits the
    // training part better than the per-step choice above.
    let total_error =
        |m: &ForecastMeta| -> f64 { residuals_of(m).iter().map(|r| r.abs() as f64).sum() };
    if let Some(indices) = baselines::additive_seasonal_indices(&cols_train[0], season) {
        let deseasonalised = ForecastMeta {
            seasonal_indices: indices,
            ..meta.clone()
        };
        if total_error(&deseasonalised) < total_error(&meta) {
            meta = deseasonalised;
        }
    }
    let residuals = residuals_of(&meta);
    meta.residual_scale = (residuals.iter().map(|r| (r * r) as f64).sum::<f64>()
        / residuals.len() as f64)
        .sqrt()
        .max(1e-3) as f32;
    let (train_ends, val_ends) = split_validation(&ends, horizon);

    let cfg = c.rnn_config(&DEFAULTS, raw.len())?;
    let precision = c.precision(&DEFAULTS)?;
    let settings = c.fit_settings(&DEFAULTS);
    say(
        c.quiet,
        &format!(
            "forecast {target:?}: {n} points, last {test_size} held out, horizon {horizon}, season {season}{}, window {window}, transform {transform:?}; {} H={}",
            if meta.seasonal_indices.is_empty() { "" } else { " (deseasonalised)" },
            cfg.mode, cfg.hidden_size
        ),
    );
    let members = a.ensemble;
    c.with_threads(|| {
        let quiet = c.quiet;
        // An ensemble trained on windows `train`, early-stopped on windows `val`.
        let train_ensemble = |settings: &recurrent::models::FitSettings, train: &[usize], val: &[usize]| {
            fit_ensemble(
                settings,
                members,
                |_, seed| {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    let mut model = Forecaster::new(cfg.clone(), meta.clone(), &mut rng)?;
                    model.rnn.set_precision(precision);
                    Ok(ForecastTask::new(model, cols_train.clone(), train.to_vec(), val.to_vec()))
                },
                |_| Box::new(CliProgress::new(quiet, Some(settings.epochs), "windows")),
                |task| task.model,
            )
        };
        // The backtest scores a network that has seen none of its windows, not even for
        // early stopping: one trained on the windows before them (their last fifth
        // validating, with the same gap), without checkpoints.
        let (inner_train, inner_val) = split_validation(train_ends, horizon);
        let mut backtest_settings = settings.clone();
        (backtest_settings.checkpoint, backtest_settings.resume) = (None, false);
        let (backtest_network, _) = train_ensemble(&backtest_settings, inner_train, inner_val)?;
        let (mut ensemble, reports) = train_ensemble(&settings, train_ends, val_ends)?;
        let y = &raw[0];
        let backtest_ends = &val_ends[val_ends.len().saturating_sub(BACKTEST_ORIGINS)..];
        let backtest = backtest_candidates(&backtest_network, &cols_all, y, backtest_ends)?;
        for m in &mut ensemble.members {
            m.meta.method = backtest.selected;
        }
        let listed: Vec<String> = backtest.errors.iter().map(|(m, e)| format!("{} {e:.3}", m.name())).collect();
        say(
            c.quiet,
            &format!(
                "backtest RMSE over the last {} training origins: {}; selected: {}{}",
                backtest_ends.len(),
                listed.join(", "),
                backtest.selected.name(),
                backtest.network_statistic.map_or(String::new(), |s| format!(
                    " (network against the best classic method: Diebold-Mariano {s:.2}, kept below -{NETWORK_EVIDENCE})"
                ))
            ),
        );

        // Rolling origin over the held-out part: each forecast sees the truth before it.
        let origins: Vec<usize> = (train_len..n).step_by(horizon).collect();
        let ends: Vec<usize> = origins.iter().map(|o| o - 1).collect();
        let network = ensemble.forecast(&cols_all, &ends)?;
        let mut rows = Vec::new();
        for (oi, &o) in origins.iter().enumerate() {
            // The classic baselines, refit on everything before the origin.
            let classic = ClassicForecasts::fit(&y[..o], season, horizon);
            let forecast = backtest.selected.combine(&network[oi], &classic).unwrap_or_else(|| network[oi].clone());
            for h in 1..=horizon {
                let t = o - 1 + h;
                if t >= n {
                    break;
                }
                let naive = y[o - 1];
                let seasonal = if season > 1 && o >= season { y[o - season + (h - 1) % season] } else { naive };
                rows.push(Row {
                    t,
                    truth: y[t],
                    forecast: forecast[h - 1],
                    network: network[oi][h - 1],
                    naive,
                    seasonal,
                    origin: o,
                    ets: classic.ets.as_ref().map(|v| v[h - 1]),
                    theta: classic.theta.as_ref().map(|v| v[h - 1]),
                });
            }
        }
        let truth: Vec<f32> = rows.iter().map(|r| r.truth).collect();
        let of = |f: fn(&Row) -> f32| errors(&truth, &rows.iter().map(f).collect::<Vec<_>>());
        let model_e = of(|r| r.forecast);
        let network_e = of(|r| r.network);
        let naive_e = of(|r| r.naive);
        let seasonal_e = of(|r| r.seasonal);
        // A baseline that could not be fitted at some origin (too short a history) is left
        // out rather than scored on part of the points.
        let classic_e = |f: fn(&Row) -> Option<f32>| -> Option<Errors> {
            let pred: Option<Vec<f32>> = rows.iter().map(f).collect();
            pred.map(|p| errors(&truth, &p))
        };
        let (ets_e, theta_e) = (classic_e(|r| r.ets), classic_e(|r| r.theta));
        let out = c.out_path(&DEFAULTS);
        let outputs = vec![
            (out.clone(), ensemble.to_bytes()?),
            (a.forecast_csv.clone(), forecast_csv(&table.index, &rows).into_bytes()),
            (a.forecast_plot.clone(), draw_forecast(&a.forecast_plot, &target, y, train_len, &rows)?),
        ];
        say(c.quiet, &format!("{:<16}{:>12}{:>12}{:>10}{:>14}", "held-out errors", "RMSE", "MAE", "MAPE %", "MSE"));
        let table = [("model", Some(&model_e)), ("network", Some(&network_e)), ("naive", Some(&naive_e)), ("seasonal naive", Some(&seasonal_e)), ("ETS", ets_e.as_ref()), ("Theta", theta_e.as_ref())];
        for (name, e) in table {
            match e {
                Some(e) => say(c.quiet, &format!("{name:<16}{:>12.3}{:>12.3}{:>10.2}{:>14.3}", e.rmse, e.mae, e.mape, e.mse)),
                None => say(c.quiet, &format!("{name:<16}{:>12}", "n/a (history too short)")),
            }
        }

        let metrics = serde_json::json!({
            "task": "forecast", "target": target, "horizon": horizon, "test_size": test_size, "points_forecast": rows.len(),
            "test_rmse": model_e.rmse, "test_mae": model_e.mae, "test_mape": model_e.mape, "test_mse": model_e.mse,
            "network_rmse": network_e.rmse, "network_mae": network_e.mae, "network_mape": network_e.mape, "network_mse": network_e.mse,
            "selected": backtest.selected.name(),
            "backtest_rmse": backtest.errors.iter().map(|(m, e)| (m.name().to_string(), serde_json::json!(e))).collect::<serde_json::Map<_, _>>(),
            // JSON has no infinities: a certain verdict (no spread at all) reads as the largest float.
            "backtest_network_statistic": backtest.network_statistic.map(|s| s.clamp(-f64::MAX, f64::MAX)),
            "backtest_origins": backtest_ends.len(),
            "naive_rmse": naive_e.rmse, "naive_mae": naive_e.mae, "naive_mape": naive_e.mape, "naive_mse": naive_e.mse,
            "seasonal_naive_rmse": seasonal_e.rmse, "seasonal_naive_mae": seasonal_e.mae, "seasonal_naive_mape": seasonal_e.mape,
            "seasonal_naive_mse": seasonal_e.mse,
            "ets_rmse": ets_e.as_ref().map(|e| e.rmse), "ets_mae": ets_e.as_ref().map(|e| e.mae), "ets_mape": ets_e.as_ref().map(|e| e.mape), "ets_mse": ets_e.as_ref().map(|e| e.mse),
            "theta_rmse": theta_e.as_ref().map(|e| e.rmse), "theta_mae": theta_e.as_ref().map(|e| e.mae), "theta_mape": theta_e.as_ref().map(|e| e.mape), "theta_mse": theta_e.as_ref().map(|e| e.mse),
            "season": season, "deseasonalised": !meta.seasonal_indices.is_empty(), "window": window, "transform": format!("{transform:?}").to_lowercase(), "ensemble": members,
        });
        let mut settings_json = c.settings_json(&DEFAULTS, &cfg);
        settings_json["ensemble"] = members.into();
        let checkpoints = c.checkpoint_files(&DEFAULTS, Some(members));
        c.finish(outputs, metrics, &merge_reports(&reports), settings_json, &checkpoints)?;
        say(c.quiet, &format!("forecast written to {} and {}; model to {}", a.forecast_csv.display(), a.forecast_plot.display(), out.display()));
        Ok(())
    })
}

/// Splits window ends into training and validation ones: the last fifth validate (at
/// least one), and the `horizon - 1` before them are left out (their targets would overlap
/// the validation windows' targets), keeping at least two for training.
fn split_validation(ends: &[usize], horizon: usize) -> (&[usize], &[usize]) {
    let n_val = (ends.len() / 5).max(1);
    let (train, val) = ends.split_at(ends.len() - n_val);
    (
        &train[..train
            .len()
            .saturating_sub(horizon - 1)
            .max(2.min(train.len()))],
        val,
    )
}

/// Most recent validation windows the backtest scores (each refits ETS, Theta and MSTL).
const BACKTEST_ORIGINS: usize = 24;

/// Scores every [`ForecastMethod`] on windows ending at `ends` (whose `horizon` points lie
/// inside the training part), the classic methods refit on the raw target `y` up to each
/// end.
fn backtest_candidates(
    ensemble: &ForecasterEnsemble,
    cols: &[Vec<f32>],
    y: &[f32],
    ends: &[usize],
) -> Result<Backtest> {
    let meta = ensemble.meta();
    let network = ensemble.forecast(cols, ends)?;
    let truth: Vec<Vec<f32>> = ends
        .iter()
        .map(|&t| y[t + 1..=t + meta.horizon].to_vec())
        .collect();
    let classic: Vec<ClassicForecasts> = ends
        .iter()
        .map(|&t| ClassicForecasts::fit(&y[..=t], meta.season, meta.horizon))
        .collect();
    Ok(backtest(&truth, &network, &classic))
}

/// One held-out point: its time index, the truth, the final forecast, the network's and
/// the baselines' forecasts, and the origin it was forecast from (ETS and Theta are `None`
/// when they could not be fitted to the history before it).
struct Row {
    t: usize,
    truth: f32,
    forecast: f32,
    network: f32,
    naive: f32,
    seasonal: f32,
    origin: usize,
    ets: Option<f32>,
    theta: Option<f32>,
}

/// The held-out forecast as CSV text (an empty field where a baseline could not be fitted).
fn forecast_csv(index: &[String], rows: &[Row]) -> String {
    let mut s = String::from("time,truth,forecast,naive,seasonal_naive,origin,ets,theta,network\n");
    let opt = |v: Option<f32>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        s += &format!(
            "{},{},{},{},{},{},{},{},{}\n",
            index[r.t],
            r.truth,
            r.forecast,
            r.naive,
            r.seasonal,
            index[r.origin],
            opt(r.ets),
            opt(r.theta),
            r.network
        );
    }
    s
}

fn draw_forecast(
    path: &std::path::Path,
    target: &str,
    y: &[f32],
    train_len: usize,
    rows: &[Row],
) -> Result<Vec<u8>> {
    use plotters::style::{RGBColor, BLACK, BLUE, RED};
    let history: Vec<(f64, f64)> = y[..train_len]
        .iter()
        .enumerate()
        .map(|(t, &v)| (t as f64, v as f64))
        .collect();
    let mut truth: Vec<(f64, f64)> = vec![(train_len as f64 - 1.0, y[train_len - 1] as f64)];
    truth.extend(rows.iter().map(|r| (r.t as f64, r.truth as f64)));
    let forecast: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.t as f64, r.forecast as f64))
        .collect();
    let classic = |f: fn(&Row) -> Option<f32>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|v| (r.t as f64, v as f64)))
            .collect()
    };
    super::plot::lines(
        path,
        &format!("{target}: history, held-out truth and forecast"),
        "time step",
        target,
        &[
            ("history", history, BLUE),
            ("truth", truth, BLACK),
            ("forecast", forecast, RED),
            ("ETS", classic(|r| r.ets), RGBColor(0, 150, 0)),
            ("Theta", classic(|r| r.theta), RGBColor(200, 120, 0)),
        ],
    )
}

/// Reads a series CSV, with gaps filled when `interpolate` (`--interpolate`); the error
/// for a gap names the flag.
pub fn read_series(path: &std::path::Path, interpolate: bool) -> recurrent::Result<SeriesTable> {
    let missing = if interpolate {
        MissingValues::Interpolate
    } else {
        MissingValues::Error
    };
    read_series_csv(path, missing).map_err(|e| match e {
        recurrent::Error::File { path, message } => recurrent::Error::File {
            path,
            message: message.replace(
                "MissingValues::Interpolate fills gaps",
                "use --interpolate to fill gaps",
            ),
        },
        e => e,
    })
}
