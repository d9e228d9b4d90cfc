//! A bounded queue per model and the thread that empties it in dynamic batches.
//!
//! Requests put their texts in the queue and wait on a oneshot channel; one std thread per
//! model takes the first waiting job, gathers more until it holds `max_batch` texts or
//! `max_wait` passed, and runs them together. Inference is CPU-bound and blocking, so it never
//! runs on the async executor, and one thread per model keeps the cores for tract's own threads.
//! The bound is in texts, not requests: that is what costs time.

use crate::loaded::Loaded;
use crate::metrics::{Metrics, ModelLabel};
use crate::telemetry::BatchTimes;
use arc_swap::ArcSwap;
use autoglm_runtime::{Encoded, RuntimeError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the worker forms batches.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Stop gathering once a batch holds this many texts.
    pub max_batch: usize,
    /// Stop gathering this long after the first job arrived.
    pub max_wait: Duration,
}

/// A finished job: the outputs and the model that computed them (which may already have been
/// replaced by a reload; its labels are the ones that match these outputs).
#[derive(Debug)]
pub struct Done {
    pub model: Arc<Loaded>,
    pub outputs: Vec<Vec<f32>>,
    /// When the batch started, finished tokenizing and finished (for the trace spans).
    pub times: Option<BatchTimes>,
}

#[derive(Debug)]
pub enum JobError {
    /// The texts cannot be run (the message is safe to show).
    Input(String),
    /// The deadline passed before the batch started.
    Expired,
    /// The model failed; the message is for the log.
    Internal(String),
}

#[derive(Debug)]
pub struct Job {
    pub texts: Vec<String>,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Done, JobError>>,
}

#[derive(Debug)]
pub enum SubmitError {
    Full,
    Closed,
}

/// The sending side of a model's queue.
#[derive(Debug)]
pub struct Queue {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl Queue {
    /// Puts a job in the queue, or refuses it at once when its texts do not fit.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let n = job.texts.len();
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= self.capacity).then_some(q + n)
            })
            .map_err(|_| SubmitError::Full)?;
        let sent = match &*self.sender.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            Err(SubmitError::Closed)
        }
    }

    /// Texts waiting for a batch.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Refuses new jobs; the worker runs what is queued, then exits.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Starts the worker thread for one model.
pub fn start(
    name: &str,
    current: Arc<ArcSwap<Loaded>>,
    capacity: usize,
    config: BatchConfig,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Queue, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let worker = Worker {
        label: Metrics::model(name),
        current,
        config,
        metrics,
        queued: queued.clone(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("batch-{name}"))
        .spawn(move || worker.run(rx))?;
    let queue = Queue {
        sender: Mutex::new(Some(tx)),
        queued,
        capacity,
    };
    Ok((queue, handle))
}

struct Worker {
    label: ModelLabel,
    current: Arc<ArcSwap<Loaded>>,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    fn run(self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let until = Instant::now() + self.config.max_wait;
            let mut texts = first.texts.len();
            let mut jobs = vec![first];
            while texts < self.config.max_batch {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        texts += job.texts.len();
                        jobs.push(job);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let left = self.queued.fetch_sub(texts, Ordering::AcqRel) - texts;
            self.metrics
                .queue_texts
                .get_or_create(&self.label)
                .set(left as i64);
            self.run_batch(jobs);
        }
        tracing::debug!(model = %self.label.model, "batch worker stopped");
    }

    fn run_batch(&self, jobs: Vec<Job>) {
        let start = Instant::now();
        let model = self.current.load_full();
        // Work nobody waits for any more is skipped: under overload this is what keeps the
        // latency of the requests that are still waiting bounded.
        let mut live = Vec::with_capacity(jobs.len());
        let mut encoded: Vec<Encoded> = Vec::new();
        for job in jobs {
            if job.reply.is_closed() {
                continue;
            }
            if start >= job.deadline {
                let _ = job.reply.send(Err(JobError::Expired));
                continue;
            }
            self.metrics
                .queue_wait_seconds
                .get_or_create(&self.label)
                .observe(start.duration_since(job.enqueued).as_secs_f64());
            let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
            match model.model.encoder().encode_all(&refs) {
                Ok(e) => {
                    let range = encoded.len()..encoded.len() + e.len();
                    encoded.extend(e);
                    live.push((job, range));
                }
                Err(e) => {
                    let _ = job.reply.send(Err(input_error(e)));
                }
            }
        }
        if live.is_empty() {
            return;
        }
        let tokenized = Instant::now();
        let tokens: usize = encoded.iter().map(Encoded::len).sum();
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.model.outputs_for(&encoded)
        }));
        self.metrics
            .inference_seconds
            .get_or_create(&self.label)
            .observe(start.elapsed().as_secs_f64());
        self.metrics
            .batch_texts
            .get_or_create(&self.label)
            .observe(encoded.len() as f64);
        self.metrics
            .texts
            .get_or_create(&self.label)
            .inc_by(encoded.len() as u64);
        self.metrics
            .tokens
            .get_or_create(&self.label)
            .inc_by(tokens as u64);
        match outputs {
            Ok(Ok(mut rows)) => {
                let times = BatchTimes {
                    start,
                    tokenized,
                    finished: Instant::now(),
                    texts: encoded.len(),
                };
                // Hand rows out from the back so each job's slice moves without copying.
                for (job, range) in live.into_iter().rev() {
                    let mine = rows.split_off(range.start);
                    let _ = job.reply.send(Ok(Done {
                        model: model.clone(),
                        outputs: mine,
                        times: Some(times),
                    }));
                }
            }
            Ok(Err(e)) => {
                let error = match e {
                    RuntimeError::InvalidInput(_) => input_error(e),
                    e => JobError::Internal(e.to_string()),
                };
                let message = format!("{error:?}");
                for (job, _) in live {
                    let _ = job.reply.send(Err(match &error {
                        JobError::Input(m) => JobError::Input(m.clone()),
                        _ => JobError::Internal(message.clone()),
                    }));
                }
            }
            Err(_) => {
                for (job, _) in live {
                    let _ = job
                        .reply
                        .send(Err(JobError::Internal("inference panicked".into())));
                }
            }
        }
    }
}

fn input_error(e: RuntimeError) -> JobError {
    match e {
        RuntimeError::InvalidInput(m) => JobError::Input(m),
        RuntimeError::Tokenizer(m) => JobError::Input(format!("cannot tokenize: {m}")),
        e => JobError::Internal(e.to_string()),
    }
}
