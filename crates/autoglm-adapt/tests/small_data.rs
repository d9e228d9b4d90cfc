//! The small-data defaults and self-training on synthetic embeddings (no model needed): the fixed
//! schedule reaches the optimum of its objective, beats early stopping on a handful of validation
//! examples where that fails, and self-training respects its threshold and caps and helps where
//! the classes form clusters.

use autoglm_adapt::head::Dense;
use autoglm_adapt::rng::Rng;
use autoglm_adapt::self_train::{select, self_train};
use autoglm_adapt::set::{stratified_split, Set};
use autoglm_adapt::train::{evaluate, train};
use autoglm_adapt::{Head, HeadSpec, Schedule, TrainOptions};

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u = rng.next_f64().max(1e-300);
    let v = rng.next_f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Two classes in `dim` dimensions: unit normal noise, class means `±signal` on the first axis.
/// `n` examples, alternating classes.
fn gaussians(rng: &mut Rng, n: usize, dim: usize, signal: f64) -> Set {
    let mut set = Set::default();
    for i in 0..n {
        let y = i % 2;
        let mut x: Vec<f64> = (0..dim).map(|_| normal(rng)).collect();
        x[0] += if y == 1 { signal } else { -signal };
        set.x.push(x);
        set.y.push(y);
    }
    set
}

fn accuracy(head: &Head, set: &Set) -> f64 {
    evaluate(head, set).1
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The gradient norm of the fixed schedule's objective, mean cross-entropy + l2/n · ½‖W‖² (with
/// two classes, twice that: see `train`).
fn objective_gradient_norm(head: &Head, set: &Set, l2: f64) -> f64 {
    let l2 = if head.classes() == 2 { 2.0 * l2 } else { l2 };
    let layer = &head.layers[0];
    let mut grads = vec![Dense::zeros(layer.inputs, layer.outputs)];
    for (x, &y) in set.x.iter().zip(&set.y) {
        head.backward(x, y, 1.0, &mut grads);
    }
    let n = set.x.len() as f64;
    let g = &grads[0];
    let weights = g
        .weight
        .iter()
        .zip(&layer.weight)
        .map(|(g, w)| (g / n + l2 / n * w).powi(2));
    let biases = g.bias.iter().map(|g| (g / n).powi(2));
    weights.chain(biases).sum::<f64>().sqrt()
}

#[test]
fn the_schedule_resolves_by_the_smallest_class_and_a_separate_validation_set() {
    let o = TrainOptions::default();
    assert_eq!(o.schedule, Schedule::Auto);
    assert_eq!(o.resolved_schedule(8, false), Schedule::Fixed);
    assert_eq!(o.resolved_schedule(299, false), Schedule::Fixed);
    assert_eq!(o.resolved_schedule(300, false), Schedule::EarlyStopping);
    assert_eq!(o.resolved_schedule(8, true), Schedule::EarlyStopping);
    let forced = TrainOptions {
        schedule: Schedule::Fixed,
        ..TrainOptions::default()
    };
    assert_eq!(forced.resolved_schedule(5000, true), Schedule::Fixed);
    for s in ["auto", "fixed", "early-stopping"] {
        assert_eq!(s.parse::<Schedule>().unwrap().to_string(), s);
    }
    assert!("sometimes".parse::<Schedule>().is_err());
}

#[test]
fn the_fixed_schedule_reaches_the_optimum_of_its_objective() {
    for (seed, n, dim) in [(1u64, 16, 32), (2, 64, 48), (3, 256, 24)] {
        let mut rng = Rng::new(seed);
        let set = gaussians(&mut rng, n, dim, 0.7);
        let options = TrainOptions {
            schedule: Schedule::Fixed,
            seed,
            ..TrainOptions::default()
        };
        let (head, outcome) = train(&set, &Set::default(), 2, &options, None, &mut |_| {}).unwrap();
        assert_eq!(outcome.schedule, Some(Schedule::Fixed));
        assert_eq!(outcome.epochs_run, options.steps);
        let start = Head::new(HeadSpec::Linear, dim, 2, &mut Rng::new(0));
        let g0 = objective_gradient_norm(&start, &set, options.l2);
        let g = objective_gradient_norm(&head, &set, options.l2);
        eprintln!("n={n} dim={dim}: gradient norm {g:.2e}, {g0:.2e} at the start");
        assert!(
            g < 1e-3 * g0,
            "n={n} dim={dim}: gradient norm {g:.2e} at the end, {g0:.2e} at the start"
        );
    }
}

/// Weak signal in 64 dimensions, 8 examples per class: the old default (early stopping on a 10 %
/// split, one validation example per class) stops on noise; the fixed schedule does not.
#[test]
fn small_data_default_beats_early_stopping_on_a_handful_of_validation_examples() {
    let (mut new, mut old) = (Vec::new(), Vec::new());
    for seed in 0..10u64 {
        let mut rng = Rng::new(100 + seed);
        let data = gaussians(&mut rng, 16, 64, 0.8);
        let test = gaussians(&mut rng, 2000, 64, 0.8);
        let options = TrainOptions {
            seed,
            ..TrainOptions::default()
        };
        let (head, outcome) =
            train(&data, &Set::default(), 2, &options, None, &mut |_| {}).unwrap();
        assert_eq!(outcome.schedule, Some(Schedule::Fixed));
        new.push(accuracy(&head, &test));
        let (train_part, valid) = stratified_split(&data, 2, 0.1, seed);
        let early = TrainOptions {
            schedule: Schedule::EarlyStopping,
            ..options
        };
        let (head, _) = train(&train_part, &valid, 2, &early, None, &mut |_| {}).unwrap();
        old.push(accuracy(&head, &test));
    }
    let (new, old) = (mean(&new), mean(&old));
    eprintln!("fixed schedule {new:.3}, early stopping on the split {old:.3}");
    assert!(
        new >= old + 0.03,
        "fixed {new:.3} vs early stopping {old:.3}"
    );
}

/// A hand-made head whose class-1 probability is sigmoid(x[0]).
fn sigmoid_head() -> Head {
    let mut layer = Dense::zeros(2, 2);
    layer.weight[1] = 1.0; // input 0 -> logit 1
    Head {
        spec: HeadSpec::Linear,
        layers: vec![layer],
    }
}

#[test]
fn pseudo_labels_respect_the_threshold_and_the_caps() {
    let head = sigmoid_head();
    let mut unlabeled = Vec::new();
    // 90 confident class-1 examples, 10 confident class-0 ones, 20 undecided.
    for i in 0..90 {
        unlabeled.push(vec![3.0 + i as f64 / 45.0, 0.0]);
    }
    for i in 0..10 {
        unlabeled.push(vec![-3.0 - i as f64 / 5.0, 0.0]);
    }
    for i in 0..20 {
        unlabeled.push(vec![-0.1 + i as f64 / 100.0, 0.0]);
    }
    let prob = |i: usize| {
        let p = 1.0 / (1.0 + (-unlabeled[i][0]).exp());
        p.max(1.0 - p)
    };
    let (picked, confident, mean_conf) = select(&head, &unlabeled, 0.9, 50);
    assert_eq!(confident, vec![10, 90]);
    // Class balance: the majority class cannot take over.
    let per_class = |c| picked.iter().filter(|p| p.1 == c).count();
    assert_eq!((per_class(0), per_class(1)), (10, 10));
    assert!(picked.iter().all(|&(i, _)| prob(i) >= 0.9));
    // Class 1 takes its 10 most confident: inputs 80..90 (the largest x[0]).
    let mut ones: Vec<usize> = picked.iter().filter(|p| p.1 == 1).map(|p| p.0).collect();
    ones.sort();
    assert_eq!(ones, (80..90).collect::<Vec<_>>());
    assert!(mean_conf.unwrap() >= 0.9);

    // The per-class cap.
    let (picked, _, _) = select(&head, &unlabeled, 0.9, 4);
    assert_eq!(picked.len(), 8);
    // A threshold no class-0 example reaches: nothing at all, not 90 of class 1.
    let (picked, confident, mean_conf) = select(&head, &unlabeled, 0.9999, 50);
    assert_eq!(confident[0], 0);
    assert!(picked.is_empty() && mean_conf.is_none());
}

/// Well-separated clusters, 2 labelled examples per class: the labelled estimate of the direction
/// is noisy, confident pseudo-labels are nearly all right, and the rounds recover the clusters.
#[test]
fn self_training_helps_where_the_classes_form_clusters() {
    let (mut base, mut st) = (Vec::new(), Vec::new());
    for seed in 0..10u64 {
        let mut rng = Rng::new(500 + seed);
        let labeled = gaussians(&mut rng, 4, 32, 2.0);
        let unlabeled = gaussians(&mut rng, 1000, 32, 2.0).x;
        let test = gaussians(&mut rng, 2000, 32, 2.0);
        let options = TrainOptions {
            seed,
            schedule: Schedule::Fixed,
            ..TrainOptions::default()
        };
        let first = train(&labeled, &Set::default(), 2, &options, None, &mut |_| {}).unwrap();
        base.push(accuracy(&first.0, &test));
        let (head, outcome) = self_train(
            &labeled,
            &Set::default(),
            &unlabeled,
            2,
            &options,
            None,
            first,
            &mut |_| {},
        )
        .unwrap();
        st.push(accuracy(&head, &test));
        let rounds = &outcome.self_training;
        assert_eq!(rounds.len(), options.self_training.rounds);
        for r in rounds {
            assert!(r.per_class <= options.self_training.per_class);
            assert!(r.confident.iter().all(|&c| c >= r.per_class));
            assert!(r.mean_confidence.unwrap() >= options.self_training.threshold);
            // All pseudo-labels together weigh `weight` times the 4 labelled examples.
            let total = r.example_weight * (2 * r.per_class) as f64;
            assert!((total - options.self_training.weight * 4.0).abs() < 1e-9);
        }
        assert_eq!(outcome.train_examples, 4);
    }
    let (base, st) = (mean(&base), mean(&st));
    eprintln!("labelled only {base:.3}, with self-training {st:.3}");
    assert!(st >= base + 0.05, "self-training {st:.3} vs {base:.3}");
}
