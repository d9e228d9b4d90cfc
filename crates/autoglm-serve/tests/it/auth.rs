//! The optional bearer token: every route but the probes needs it, compared by digest.

use crate::{get, send, Answer, Packages};
use autoglm_serve::{AppState, AuthToken, ServeError};
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

const TOKEN: &str = "s3cret-token_with.visible~chars";

fn guarded(p: &Packages) -> AppState {
    let mut config = p.config();
    config.auth = Some(AuthToken::new(TOKEN).unwrap());
    AppState::start(&config).unwrap()
}

async fn with_auth(state: &AppState, method: &str, uri: &str, auth: Option<&str>) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let body = if method == "POST" {
        Body::from(json!({"texts": ["good"]}).to_string())
    } else {
        Body::empty()
    };
    send(state, request.body(body).unwrap()).await
}

#[tokio::test]
async fn a_token_guards_every_route_but_the_probes() {
    let p = Packages::new();
    let state = guarded(&p);
    let right = format!("Bearer {TOKEN}");
    for (method, uri) in [
        ("POST", "/v1/classify"),
        ("GET", "/v2"),
        ("GET", "/v2/models/cls"),
        ("GET", "/v2/models/cls/ready"),
        ("GET", "/metrics"),
    ] {
        let missing = with_auth(&state, method, uri, None).await;
        assert_eq!(missing.status, 401, "{uri}: {}", missing.text);
        assert_eq!(
            missing.headers["www-authenticate"],
            r#"Bearer realm="autoglm""#
        );
        assert!(missing.error().contains("Bearer"), "{}", missing.text);
        for wrong in [
            "Bearer wrong",
            "Bearer ",
            "Basic czNjcmV0",
            TOKEN,
            &format!("Bearer {TOKEN}x"),
            &format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        ] {
            let a = with_auth(&state, method, uri, Some(wrong)).await;
            assert_eq!(a.status, 401, "{uri} with {wrong:?}: {}", a.text);
            assert!(a.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
        }
        let a = with_auth(&state, method, uri, Some(&right)).await;
        assert_eq!(a.status, 200, "{uri}: {}", a.text);
    }
    // The scheme is case-insensitive (RFC 7235).
    let a = with_auth(
        &state,
        "POST",
        "/v1/classify",
        Some(&format!("bearer {TOKEN}")),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    // A wrong token says so (RFC 6750 error code).
    let a = with_auth(&state, "GET", "/v2", Some("Bearer nope")).await;
    assert!(a.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains(r#"error="invalid_token""#));
    // Unknown routes do not tell an unauthenticated client what exists.
    assert_eq!(get(&state, "/v1/nothing").await.status, 401);
    // The probes stay open.
    assert_eq!(get(&state, "/v2/health/live").await.status, 200);
    assert_eq!(get(&state, "/v2/health/ready").await.status, 200);
    // Refusals are counted like any other answer.
    let metrics = with_auth(&state, "GET", "/metrics", Some(&right))
        .await
        .text;
    assert!(
        metrics.contains(r#"autoglm_http_requests_total{route="/v1/classify",status="401"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_token_nothing_changes() {
    let p = Packages::new();
    let state = AppState::start(&p.config()).unwrap();
    let a = with_auth(&state, "POST", "/v1/classify", None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = with_auth(&state, "GET", "/metrics", Some("Bearer anything")).await;
    assert_eq!(a.status, 200);
}

#[test]
fn the_token_file_is_one_private_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let write = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
    };
    write(&format!("{TOKEN}\n"), 0o600);
    let token = AuthToken::from_file(&path).unwrap();
    assert!(token.matches(TOKEN.as_bytes()));
    assert!(!token.matches(format!("{TOKEN}\n").as_bytes()));
    assert_eq!(format!("{token:?}"), "AuthToken(..)", "never printed");
    write(&format!("{TOKEN}\r\n"), 0o440);
    assert!(AuthToken::from_file(&path)
        .unwrap()
        .matches(TOKEN.as_bytes()));

    let refused = |why: &str| {
        let e = AuthToken::from_file(&path).unwrap_err();
        assert!(matches!(e, ServeError::AuthToken { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains(why), "{e}");
        assert!(!e.contains(TOKEN), "the error shows the token: {e}");
    };
    write("", 0o600);
    refused("empty");
    write("\n", 0o600);
    refused("empty");
    write(&format!("{TOKEN} more\n"), 0o600);
    refused("space");
    #[cfg(unix)]
    {
        write(&format!("{TOKEN}\n"), 0o644);
        refused("other users");
        write(&format!("{TOKEN}\n"), 0o602);
        refused("other users");
    }
    write(&"x".repeat(5000), 0o600);
    refused("4096");
    std::fs::remove_file(&path).unwrap();
    refused("No such file");
    std::fs::create_dir(&path).unwrap();
    refused("not a regular file");
}
