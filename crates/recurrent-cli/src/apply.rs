//! `recurrent predict` and `recurrent generate`: using trained task models.

use rand::SeedableRng;
use recurrent::data::{read_sequences, read_text};
use recurrent::io::{write_atomic, TensorFile};
use recurrent::models::{CharLm, ClassifierEnsemble, Ensemble, ForecasterEnsemble, Seq2Seq};
use recurrent::{Error, Result};
use std::path::Path;

/// Runs a classifier or forecaster on new data, or scores a text with a language model,
/// and writes CSV to `output`.
pub fn predict(
    model: &Path,
    data: &Path,
    output: &Path,
    interpolate: bool,
    beam: usize,
) -> Result<()> {
    crate::paths::check_files(
        &[("--model", model), ("--data", data)],
        &[("--output", output)],
    )?;
    let task = TensorFile::read(model)?
        .metadata("task")
        .map(str::to_string);
    match task.as_deref() {
        Some("classify") => predict_classes(model, data, output),
        Some("forecast") => predict_forecast(model, data, output, interpolate),
        Some("lm") => score_text(model, data, output),
        Some("seq2seq") => decode_pairs(model, data, output, beam),
        _ => Err(Error::File {
            path: model.display().to_string(),
            message: "not a model written by `recurrent train` (no `task` metadata)".into(),
        }),
    }
}

fn predict_classes(model: &Path, data: &Path, output: &Path) -> Result<()> {
    let m = ClassifierEnsemble::load(model)?;
    let seqs = read_sequences(data)?;
    let dims = m.meta().scaler.mean.len();
    if seqs.dims() != dims {
        return Err(Error::Invalid(format!(
            "the model expects {dims} features per step, {} has {}",
            data.display(),
            seqs.dims()
        )));
    }
    let probs = m.probabilities(&seqs.sequences, 64)?;
    let classes = m.meta().classes.clone();
    let mut s = String::from("case,label,predicted");
    for c in &classes {
        s += &format!(",p_{c}");
    }
    s.push('\n');
    let mut correct = 0;
    for (i, p) in probs.iter().enumerate() {
        let best = p
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |a, (k, &v)| if v > a.1 { (k, v) } else { a },
            )
            .0;
        correct += usize::from(classes[best] == seqs.labels[i]);
        s += &format!("{i},{},{}", seqs.labels[i], classes[best]);
        for v in p {
            s += &format!(",{v:.6}");
        }
        s.push('\n');
    }
    write_atomic(output, s.as_bytes())?;
    println!(
        "{} sequences classified ({} match the labels in the file); written to {}",
        probs.len(),
        correct,
        output.display()
    );
    Ok(())
}

fn predict_forecast(model: &Path, data: &Path, output: &Path, interpolate: bool) -> Result<()> {
    let m = ForecasterEnsemble::load(model)?;
    let table = crate::train::forecast::read_series(data, interpolate)?;
    let meta = m.meta().clone();
    // A deseasonalised model counts seasonal positions from the training series' first
    // row: the rows before it are left out, and a file without it cannot be placed.
    let start = if meta.seasonal_indices.is_empty() {
        0
    } else {
        table
            .index
            .iter()
            .position(|label| *label == meta.first_row)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the model counts seasonal positions from the row {:?} of its training series, which {} does not have",
                    meta.first_row,
                    data.display()
                ))
            })?
    };
    let mut raw = vec![table.values[table.column(&meta.target)?][start..].to_vec()];
    for name in &meta.inputs {
        raw.push(table.values[table.column(name)?][start..].to_vec());
    }
    let n = raw[0].len();
    if n < meta.window {
        return Err(Error::Invalid(format!(
            "the model needs the last {} values, {} has {n}",
            meta.window,
            data.display()
        )));
    }
    let cols = m.transform_columns(&raw)?;
    let forecast = m.forecast_final(&cols, &raw[0], &[n - 1])?;
    let mut s = format!("step,after,{}\n", meta.target);
    for (h, v) in forecast[0].iter().enumerate() {
        s += &format!("{},{},{v}\n", h + 1, table.index[start + n - 1]);
    }
    write_atomic(output, s.as_bytes())?;
    println!(
        "{}-step forecast ({}) after {} written to {}",
        meta.horizon,
        meta.method.name(),
        table.index[start + n - 1],
        output.display()
    );
    Ok(())
}

/// Decodes every source of a one-column file or of a pairs file (the model's source and
/// target columns when it has them, else the first two) and writes
/// `source,prediction[,reference,edit_distance]`.
fn decode_pairs(model: &Path, data: &Path, output: &Path, beam: usize) -> Result<()> {
    use recurrent::data::{read_pairs, PairColumns};
    use recurrent::models::seq2seq::{edit_distance, SequenceScores};
    let m = Ensemble::<Seq2Seq>::load(model)?;
    let model = &m.members[0];
    let pairs = read_pairs(
        data,
        &PairColumns {
            sources_only: true,
            ..Default::default()
        },
    )?;
    let with_reference = !pairs.columns.1.is_empty();
    let meta = &model.meta;
    let (sources, unknown) = meta
        .source
        .encode_all(pairs.pairs.iter().map(|(s, _)| s.as_str()));
    if unknown > 0 {
        println!(
            "{unknown} source tokens are not in the model's vocabulary; they are read as <unk>"
        );
    }
    let predictions = model.decode(&sources, beam)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| Error::Invalid(format!("writing CSV: {e}"));
    let mut header = vec!["source", "prediction"];
    if with_reference {
        header.extend(["reference", "edit_distance"]);
    }
    w.write_record(&header).map_err(csv_error)?;
    // `(edit distance, reference length)` of each pair with a reference.
    let mut edits = Vec::new();
    for ((source, reference), ids) in pairs.pairs.iter().zip(&predictions) {
        let prediction = meta.target.decode(ids);
        let mut row = vec![source.clone(), prediction];
        if with_reference {
            let reference_tokens = meta.target.tokens.split(reference);
            let predicted_tokens = meta.target.tokens.split(&row[1]);
            let d = edit_distance(&predicted_tokens, &reference_tokens);
            edits.push((d, reference_tokens.len()));
            row.extend([reference.clone(), d.to_string()]);
        }
        w.write_record(&row).map_err(csv_error)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Invalid(format!("writing CSV: {e}")))?;
    write_atomic(output, &bytes)?;
    let n = predictions.len();
    if with_reference {
        let scores = SequenceScores::from_edits(edits);
        println!(
            "{n} sources decoded (beam {beam}): token error rate {:.4}, sequence error rate {:.4} against the references; written to {}",
            scores.token_error_rate,
            scores.sequence_error_rate,
            output.display()
        );
    } else {
        println!(
            "{n} sources decoded (beam {beam}); written to {}",
            output.display()
        );
    }
    Ok(())
}

/// Bits per character of a language model on a UTF-8 text, read as one stream (every
/// character predicted from all the text before it); writes `characters,bits_per_char`.
fn score_text(model: &Path, data: &Path, output: &Path) -> Result<()> {
    let lm = CharLm::load(model)?;
    let text = read_text(data)?;
    if let Some((line, c)) = text.lines().enumerate().find_map(|(i, l)| {
        l.chars()
            .find(|&c| lm.vocab.index(c).is_none())
            .map(|c| (i + 1, c))
    }) {
        return Err(Error::File {
            path: data.display().to_string(),
            message: format!("line {line}: character {c:?} is not in the model's vocabulary"),
        });
    }
    let ids = lm.vocab.encode(&text)?;
    if ids.len() < 2 {
        return Err(Error::File {
            path: data.display().to_string(),
            message: format!("{} characters; at least 2 are needed", ids.len()),
        });
    }
    let bpc = lm.bits_per_char(&ids, 1, 256)?;
    write_atomic(
        output,
        format!("characters,bits_per_char\n{},{bpc}\n", ids.len()).as_bytes(),
    )?;
    println!(
        "bits_per_char: {bpc:.4} over {} characters; written to {}",
        ids.len(),
        output.display()
    );
    Ok(())
}

/// Samples text from a language model and prints it as it is sampled.
pub fn generate(
    model: &Path,
    prompt: &str,
    length: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> Result<()> {
    use std::io::Write;
    let lm = CharLm::load(model)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let broken = |e: std::io::Error| Error::File {
        path: "standard output".into(),
        message: format!("cannot write: {e}"),
    };
    // The prompt is checked (vocabulary, non-empty) before anything is printed.
    lm.vocab.encode(prompt)?;
    write!(out, "{prompt}").map_err(broken)?;
    let mut pending = 0usize;
    lm.generate_each(prompt, length, temperature, top_k, &mut rng, |c| {
        write!(out, "{c}").map_err(broken)?;
        pending += 1;
        // Flushed every line and every 64 characters, so the text appears as it comes.
        if c == '\n' || pending >= 64 {
            out.flush().map_err(broken)?;
            pending = 0;
        }
        Ok(())
    })?;
    writeln!(out).and_then(|()| out.flush()).map_err(broken)
}
