//! Everything that decides a training run, and its ranges.

use crate::class_weight::ClassWeight;
use crate::head::HeadSpec;
use crate::{AdaptError, Result};
use serde::{Deserialize, Serialize};

/// How long a head trains, and what picks the model that is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// `Fixed` when there is no separate validation file and the smallest class has fewer than
    /// `small_data` examples; `EarlyStopping` otherwise.
    Auto,
    /// Every example trains: full-batch AdamW on the mean cross-entropy + `l2 / n · ½‖W‖²` (with
    /// two classes `l2 / n · ½‖w₁ − w₀‖²`: the objective of an L2 logistic regression with
    /// `C = 1 / l2`, binary or multinomial), `steps` steps with a cosine
    /// learning-rate decay; the last step is the model. Nothing is held out, so a handful of
    /// validation examples cannot pick a bad epoch.
    Fixed,
    /// Mini-batches for at most `epochs` epochs; the epoch with the lowest validation loss is
    /// kept, and training stops after `patience` epochs without a better one.
    EarlyStopping,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Schedule::Auto),
            "fixed" => Ok(Schedule::Fixed),
            "early-stopping" => Ok(Schedule::EarlyStopping),
            _ => Err(format!("`{s}`: expected auto, fixed or early-stopping")),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Auto => "auto",
            Schedule::Fixed => "fixed",
            Schedule::EarlyStopping => "early-stopping",
        })
    }
}

/// Self-training on unlabelled examples: after the head is trained on the labelled ones, each
/// round labels the unlabelled examples with the current head, keeps the confident ones (at
/// least `threshold` probability for the predicted class; the same number for every class, at
/// most `per_class`, most confident first) and retrains on labelled + pseudo-labelled examples.
/// Each round selects afresh from the newest head, so an early mistake can be dropped again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelfTraining {
    pub rounds: usize,
    pub threshold: f64,
    pub per_class: usize,
    /// The pseudo-labelled examples together weigh `weight ×` the labelled ones in the loss.
    pub weight: f64,
}

impl Default for SelfTraining {
    fn default() -> Self {
        SelfTraining {
            rounds: 2,
            threshold: 0.55,
            per_class: 500,
            weight: 0.5,
        }
    }
}

/// Everything that decides a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
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
    pub schedule: Schedule,
    /// `Auto` trains the fixed schedule below this many examples in the smallest class.
    pub small_data: usize,
    /// Full-batch steps of the fixed schedule.
    pub steps: usize,
    /// L2 penalty of the fixed schedule, `l2 / n · ½‖W‖²` (n: the summed example weights; two
    /// classes: on `w₁ − w₀`): 1 is scikit-learn's `LogisticRegression()` default (`C = 1`).
    pub l2: f64,
    /// Used when unlabelled examples are given.
    pub self_training: SelfTraining,
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
            schedule: Schedule::Auto,
            small_data: 300,
            steps: 1000,
            l2: 1.0,
            self_training: SelfTraining::default(),
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
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        let st = &self.self_training;
        if !(0.0..=1.0).contains(&st.threshold) {
            return bad(
                "self_training.threshold",
                format!("{}: must be a probability in [0, 1]", st.threshold),
            );
        }
        if st.per_class == 0 {
            return bad("self_training.per_class", "must be at least 1".into());
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
            ("l2", self.l2),
            ("self_training.weight", st.weight),
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

    /// The schedule `Auto` resolves to for a labelled set whose smallest class has
    /// `smallest_class` examples, with or without a separate validation set.
    pub fn resolved_schedule(&self, smallest_class: usize, separate_valid: bool) -> Schedule {
        match self.schedule {
            Schedule::Auto if !separate_valid && smallest_class < self.small_data => {
                Schedule::Fixed
            }
            Schedule::Auto => Schedule::EarlyStopping,
            s => s,
        }
    }
}
