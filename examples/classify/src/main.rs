//! The library API in one program: load a model package (verified against its digests), then
//! classify texts with a classification package, per task with a multi-task package, or embed
//! them with an embedding package.
//!
//! ```sh
//! cargo run --release -p autoglm-example-classify -- models/sentiment-int8.tar "I loved this film"
//! ```

use autoglm_runtime::{LoadOptions, Model, ModelKind};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(package) = args.next() else {
        eprintln!("usage: autoglm-example-classify PACKAGE TEXT…");
        return ExitCode::from(2);
    };
    let texts: Vec<String> = args.collect();
    match run(&package, &texts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(package: &str, texts: &[String]) -> Result<(), autoglm_runtime::RuntimeError> {
    if texts.is_empty() {
        return Err(autoglm_runtime::RuntimeError::InvalidInput(
            "no texts to run: give them after the package".into(),
        ));
    }
    // Two threads for the matrix products; every other option at its default (tract, CPU).
    let options = LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    };
    let model = Model::load_with(package, &options)?;
    let m = model.manifest();
    println!(
        "{:?} package: {} (max {} tokens, {})",
        m.kind,
        m.provenance.base_model,
        m.max_length,
        model.backend_description()
    );
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    match m.kind {
        ModelKind::Classification if !model.tasks().is_empty() => {
            // A multi-task package: one backbone pass, one prediction per task.
            for (text, tasks) in texts.iter().zip(model.classify_tasks(&texts, None)?) {
                for t in tasks {
                    let p = &t.prediction;
                    println!("{}={}\t{:.4}\t{text}", t.task, p.label, p.scores[p.index]);
                }
            }
        }
        ModelKind::Classification => {
            for (text, p) in texts.iter().zip(model.classify(&texts)?) {
                println!("{}\t{:.4}\t{text}", p.label, p.scores[p.index]);
                // The JSON that `autoglm classify --json` prints and `/v1/classify` answers.
                println!("{}", p.to_json(model.labels()));
            }
        }
        ModelKind::Embedding => {
            let vectors = model.embed(&texts)?;
            for (text, v) in texts.iter().zip(&vectors) {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                println!("{} dims, norm {norm:.3}\t{text}", v.len());
            }
            if let [a, b, ..] = &vectors[..] {
                let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                println!("cosine(first, second) = {cosine:.4}");
            }
        }
    }
    Ok(())
}
