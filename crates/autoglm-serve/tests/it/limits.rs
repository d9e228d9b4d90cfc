//! Work control: size limits, back-pressure, deadlines, drain.

use crate::{call, get, post, Packages};
use autoglm_serve::AppState;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn size_limits_answer_413() {
    let p = Packages::new();
    let mut config = p.config();
    config.limits.max_body_bytes = 4096;
    config.limits.max_texts = 3;
    config.limits.max_text_bytes = 100;
    let state = AppState::start(&config).unwrap();
    let body = json!({"texts": ["a".repeat(5000)]}).to_string();
    let a = call(&state, "POST", "/v1/classify", Some(body)).await;
    assert_eq!(a.status, 413, "{}", a.text);
    assert!(a.error().contains("body"));
    let a = post(
        &state,
        "/v1/classify",
        json!({"texts": ["a", "b", "c", "d"]}),
    )
    .await;
    assert_eq!(a.status, 413);
    assert!(a.error().contains("at most 3"));
    let a = post(
        &state,
        "/v1/classify",
        json!({"texts": ["ok", "x".repeat(101)]}),
    )
    .await;
    assert_eq!(a.status, 413);
    assert!(a.error().contains("text 1 is 101 bytes"), "{}", a.text);
    let a = post(
        &state,
        "/v2/models/cls/infer",
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x".repeat(101)]}]}),
    )
    .await;
    assert_eq!(a.status, 413);
    // Exactly at the limits is fine.
    let a = post(
        &state,
        "/v1/classify",
        json!({"texts": ["a", "b", "x".repeat(100)]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// Polls until `cond` holds (the batch thread runs on its own schedule).
async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let p = Packages::new();
    let mut config = p.config();
    config.limits.queue_capacity = 2;
    config.limits.max_texts = 2;
    // The first job holds the queue while its batch gathers for a while.
    config.batch.max_wait = Duration::from_millis(600);
    config.batch.max_batch = 64;
    let state = AppState::start(&config).unwrap();
    let first = {
        let state = state.clone();
        tokio::spawn(
            async move { post(&state, "/v1/classify", json!({"texts": ["a", "b"]})).await },
        )
    };
    let slot = state.slot(Some("cls")).unwrap();
    until("the first job to be queued", || slot.queued() == 2).await;
    let full = post(&state, "/v1/classify", json!({"texts": ["c"]})).await;
    assert_eq!(full.status, 429, "{}", full.text);
    assert_eq!(full.headers["retry-after"], "1");
    assert!(full.error().contains("queue is full"));
    // Another model has its own queue.
    let other = post(&state, "/v1/embed", json!({"texts": ["c"], "model": "emb"})).await;
    assert_eq!(other.status, 200);
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(slot.queued(), 0);
    let again = post(&state, "/v1/classify", json!({"texts": ["c"]})).await;
    assert_eq!(again.status, 200);
    let metrics = get(&state, "/metrics").await.text;
    assert!(metrics.contains(r#"autoglm_http_requests_total{route="/v1/classify",status="429"} 1"#));
}

#[tokio::test]
async fn a_request_past_its_deadline_answers_504() {
    let p = Packages::new();
    let mut config = p.config();
    config.limits.request_timeout = Duration::from_millis(50);
    config.batch.max_wait = Duration::from_millis(400);
    config.batch.max_batch = 64;
    let state = AppState::start(&config).unwrap();
    let a = post(&state, "/v1/classify", json!({"texts": ["slow"]})).await;
    assert_eq!(a.status, 504, "{}", a.text);
    assert!(a.error().contains("50 ms"));
    // The expired job is skipped, not run, and the queue empties.
    let slot = state.slot(None).unwrap();
    until("the queue to empty", || slot.queued() == 0).await;
}

#[tokio::test]
async fn draining_finishes_queued_work_then_refuses() {
    let p = Packages::new();
    let mut config = p.config();
    config.batch.max_wait = Duration::from_millis(300);
    config.batch.max_batch = 64;
    let state = AppState::start(&config).unwrap();
    let queued = {
        let state = state.clone();
        tokio::spawn(async move { post(&state, "/v1/classify", json!({"texts": ["a"]})).await })
    };
    let slot = state.slot(None).unwrap();
    until("the job to be queued", || slot.queued() == 1).await;
    let drained = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.drain())
    };
    let queued = queued.await.unwrap();
    assert_eq!(queued.status, 200, "queued work finishes: {}", queued.text);
    drained.await.unwrap();
    let after = post(&state, "/v1/classify", json!({"texts": ["b"]})).await;
    assert_eq!(after.status, 503);
    assert!(after.error().contains("shutting down"));
    assert_eq!(get(&state, "/v2/health/ready").await.status, 503);
    assert_eq!(get(&state, "/v2/health/live").await.status, 200);
}
