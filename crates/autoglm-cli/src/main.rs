//! `autoglm`: export, inspect and run AutoGLM Edge model packages. The command line lives here,
//! one module per command (its arguments and its body); the libraries take plain options.

mod adapt;
mod backbone;
mod bench;
mod classify;
mod embed;
mod engine;
mod export;
mod input;
mod inspect;
mod joint;
mod model;
mod multitask;
mod rank;
mod serve;
mod sign;

/// glibc's malloc returns the multi-megabyte activations of each inference to the system and
/// page-faults them back in on the next one (measured: up to a quarter of the run time at 512
/// tokens); mimalloc keeps them mapped for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "autoglm",
    version,
    about = "AutoGLM Edge: export and run fine-tuned transformer encoders at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Turn a Hugging Face base model (+ a PEFT LoRA adapter) into a model package.
    Export(export::ExportArgs),
    /// Show a package's manifest, verify its digests, list sizes and graph ops.
    Inspect(inspect::InspectArgs),
    /// Classify texts with a classification package.
    Classify(model::RunArgs),
    /// Embed texts with an embedding package (pooled, normalized vectors).
    Embed(model::RunArgs),
    /// Measure inference latency on synthetic inputs of exact token lengths.
    Bench(bench::BenchArgs),
    /// Serve packages over HTTP (/v1, Open Inference Protocol v2, /metrics) with hot reload.
    Serve(serve::ServeArgs),
    /// Train a task head on a frozen embedding package: a new classification package.
    ///
    /// The defaults by training-set size (no --valid):
    ///
    /// - Small data (the smallest class has fewer than --small-data = 300 examples, e.g. 8 to 128
    ///   shots per class): the fixed schedule. Every example trains (nothing is held out), 1000
    ///   full-batch AdamW steps with a cosine learning-rate decay minimise the mean cross-entropy
    ///   + l2/n * 0.5*|W|^2 (two classes: on the logit difference w1 - w0; --l2 1 is then the
    ///   objective of scikit-learn's LogisticRegression(), C = 1), and the last step is the head. Early stopping on a few held-out examples picks an epoch
    ///   by noise; this cannot.
    ///
    /// - Larger data: 10 % of every class (--valid-fraction) is held out, mini-batches of 32
    ///   train for at most --epochs 100 epochs with AdamW (--weight-decay 1e-4), and the epoch with
    ///   the lowest validation loss is kept (stopping after --patience 10 epochs without one).
    ///
    /// - With --valid FILE: early stopping on that file, whatever the size.
    ///
    /// With --unlabeled FILE, --self-train-rounds 2 rounds of self-training follow: the head labels
    /// the unlabelled texts, those at least --pseudo-threshold 0.55 probable are candidates, every
    /// class takes the same number of them (at most --pseudo-per-class 500, most confident first),
    /// and the head trains again on labelled + pseudo-labelled examples, the latter together
    /// weighing --pseudo-weight 0.5 x the labelled ones. Each round is in training.json.
    #[command(verbatim_doc_comment)]
    Adapt(Box<adapt::AdaptArgs>),
    /// Combine adapted single-task packages into one package: one backbone pass, many heads.
    Multitask(multitask::MultitaskArgs),
    /// Rank adapted source packages for a target data set by transferability (MMD).
    Rank(rank::RankArgs),
    /// Make a minisign key pair for signing packages.
    Keygen(sign::KeygenArgs),
    /// Sign a package (its manifest) with a secret key.
    Sign(sign::SignArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export(a) => export::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Adapt(a) => adapt::run(*a),
        Command::Multitask(a) => multitask::run(a),
        Command::Rank(a) => rank::run(a),
        Command::Keygen(a) => sign::keygen(a),
        Command::Sign(a) => sign::sign(a),
    }
}
