//! The running service's shared state: the loaded models, the limits, the metrics.

use crate::joint::Joint;
use crate::metrics::Metrics;
use crate::telemetry::Telemetry;
use crate::{ApiError, AuthToken, Config, Limits, ModelSlot, ServeError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The service's shared state: the models, the limits, the metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) models: Vec<Arc<ModelSlot>>,
    pub(crate) limits: Limits,
    pub(crate) auth: Option<AuthToken>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: AtomicBool,
    pub(crate) joint: Option<Arc<Joint>>,
    pub(crate) telemetry: Option<Arc<Telemetry>>,
}

impl AppState {
    /// Loads and verifies every package and starts their batch threads. Blocking.
    pub fn start(config: &Config) -> Result<Self, ServeError> {
        if config.models.is_empty() {
            return Err(ServeError::Config(
                "no model to serve (`models` is empty)".into(),
            ));
        }
        for (i, m) in config.models.iter().enumerate() {
            if config.models[..i].iter().any(|o| o.name == m.name) {
                return Err(ServeError::Config(format!(
                    "model name `{}` is used twice",
                    m.name
                )));
            }
        }
        let limits = &config.limits;
        if limits.max_texts == 0 || limits.max_texts > limits.queue_capacity {
            return Err(ServeError::Config(format!(
                "texts per request ({}) must be 1 to the queue capacity ({})",
                limits.max_texts, limits.queue_capacity
            )));
        }
        let mut metrics = Metrics::new();
        let telemetry = match &config.telemetry {
            None => None,
            Some(t) => Telemetry::start(t)?.map(Arc::new),
        };
        let joint = match &config.joint {
            None => None,
            Some(j) => {
                if let Some(m) = &j.model {
                    if !config.models.iter().any(|s| &s.name == m) {
                        return Err(ServeError::Config(format!(
                            "joint inference: no model named `{m}` is served"
                        )));
                    }
                }
                Some(Arc::new(Joint::new(
                    j.clone(),
                    &mut metrics,
                    telemetry.clone(),
                )?))
            }
        };
        let metrics = Arc::new(metrics);
        let mut models = Vec::new();
        for spec in &config.models {
            let slot = ModelSlot::start(
                spec.name.clone(),
                spec.path.clone(),
                config.load.clone(),
                config.batch.clone(),
                limits.queue_capacity,
                metrics.clone(),
            )?;
            models.push(Arc::new(slot));
        }
        Ok(AppState {
            inner: Arc::new(Inner {
                models,
                limits: limits.clone(),
                auth: config.auth.clone(),
                metrics,
                ready: AtomicBool::new(true),
                joint,
                telemetry,
            }),
        })
    }

    pub fn models(&self) -> &[Arc<ModelSlot>] {
        &self.inner.models
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The named model, or the default (first) one.
    pub fn slot(&self, name: Option<&str>) -> Result<Arc<ModelSlot>, ApiError> {
        let models = &self.inner.models;
        match name {
            None => models.first().cloned(),
            Some(n) => models.iter().find(|m| m.name == n).cloned(),
        }
        .ok_or_else(|| ApiError::NotFound(format!("no model named `{}`", name.unwrap_or(""))))
    }

    /// The joint-inference link, when `slot` is the model that escalates.
    pub(crate) fn joint_for(&self, slot: &ModelSlot) -> Option<Arc<Joint>> {
        let joint = self.inner.joint.as_ref()?;
        let escalating = match joint.model() {
            Some(name) => name,
            None => &self.inner.models.first()?.name,
        };
        (slot.name == escalating).then(|| joint.clone())
    }

    /// Sends the telemetry still buffered (call at shutdown; nothing without telemetry).
    pub fn flush_telemetry(&self) {
        if let Some(t) = &self.inner.telemetry {
            t.flush();
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Reloads every model whose package changed on disk (or all with `force`). Blocking.
    pub fn reload(&self, force: bool, reason: &str) {
        for slot in &self.inner.models {
            if force || slot.changed_on_disk() {
                // The error is logged and counted by the slot; the old package keeps serving.
                let _ = slot.reload(reason);
            }
        }
    }

    /// Reports not ready (so the load balancer stops sending), refuses new work once the
    /// server stops, and waits for queued work to finish. Blocking.
    pub fn drain(&self) {
        self.inner.ready.store(false, Ordering::Release);
        for slot in &self.inner.models {
            slot.drain();
        }
    }
}
