//! Everything that decides a training run, and its ranges.

use crate::class_weight::ClassWeight;
use crate::head::HeadSpec;
use crate::{AdaptError, Result};
use serde::{Deserialize, Serialize};

/// Everything that decides a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub head: HeadSpec,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Learning rate of the output layer.
    pub lr: f64,
    /// Learning rate of the hidden layer (MLP heads).
    pub hidden_lr: f64,
    /// Decoupled (AdamW) weight decay on the weights, not the biases.
    pub weight_decay: f64,
    /// Largest global gradient norm; 0 turns clipping off.
    pub clip: f64,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    pub class_weight: ClassWeight,
    /// SMOTE neighbours: synthesize minority-class examples until every class is as large as
    /// the largest one. `None` = off.
    pub smote: Option<usize>,
    /// L2-SP strength toward the reference head's weights (`init_from`); 0 = plain fine-tuning.
    pub l2sp: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            head: HeadSpec::Linear,
            seed: 0,
            epochs: 100,
            batch_size: 32,
            lr: 1e-2,
            hidden_lr: 3e-3,
            weight_decay: 1e-4,
            clip: 1.0,
            patience: 10,
            class_weight: ClassWeight::None,
            smote: None,
            l2sp: 0.0,
        }
    }
}

impl TrainOptions {
    pub fn check(&self) -> Result<()> {
        let bad = |option: &'static str, reason: String| {
            Err(AdaptError::InvalidOption { option, reason })
        };
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        for (name, v) in [
            ("lr", self.lr),
            ("hidden_lr", self.hidden_lr),
            ("weight_decay", self.weight_decay),
            ("clip", self.clip),
            ("l2sp", self.l2sp),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(name, format!("{v}: must be a finite number >= 0"));
            }
        }
        if self.lr == 0.0 {
            return bad("lr", "must be > 0".into());
        }
        if self.smote == Some(0) {
            return bad("smote", "needs at least 1 neighbour".into());
        }
        Ok(())
    }
}
