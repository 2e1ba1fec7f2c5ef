//! The manager's whole HTTP surface as one `Router`: the legacy API
//! (`api.rs`), the JSON API (`api_v1.rs`), metrics and the web UI, behind
//! the layers every request passes (security headers, authorization, body
//! limit, request metrics). `main.rs` serves it; tests can call it in
//! process.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The whole HTTP surface; with a `webroot`, the web UI is served from it
/// at `/` (and any path no API route takes).
pub fn app(state: AppState, webroot: Option<&std::path::Path>) -> Router {
    let router = crate::api::routes()
        .route("/metrics", get(serve_metrics))
        .nest("/api/v1", crate::api_v1::router());
    let router = match webroot {
        None => router.route("/", get(crate::api::index)),
        // No build step: the files are served as they are in the tree, and
        // revalidated on every load so an edited UI shows up at once.
        Some(dir) => router.fallback_service(
            tower::ServiceBuilder::new()
                .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
                    axum::http::header::CACHE_CONTROL,
                    axum::http::HeaderValue::from_static("no-cache"),
                ))
                .service(tower_http::services::ServeDir::new(dir)),
        ),
    };
    use axum::http::{header, HeaderValue};
    use tower_http::set_header::SetResponseHeaderLayer as SetHeader;
    router
        // Never framed (no clickjacking of the UI's buttons), no type
        // sniffing, no addresses leaked in Referer.
        .layer(SetHeader::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetHeader::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ))
        .layer(SetHeader::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetHeader::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::gate::authorize,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.auth.max_body_bytes as usize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

/// `GET /metrics`.
async fn serve_metrics(State(state): State<AppState>) -> Response {
    state.metrics.render(state.streams.open_total())
}

/// The router in process (`tower::ServiceExt::oneshot`), for what it
/// answers before any store is asked: error mapping, preconditions, paging,
/// limits and authentication. The etcd and MongoDB clients point at a port
/// nothing listens on (both connect lazily), so a request that did reach a
/// store would fail with 503, which these tests would notice.
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    const ADMIN: &str = "an-admin-token-of-at-least-32-characters";

    async fn state() -> AppState {
        let nowhere = vec!["http://127.0.0.1:9".to_string()];
        let etcd = gdts_runtime::connect_etcd(&nowhere, &Default::default())
            .await
            .expect("a lazy etcd client");
        let mongo =
            mongodb::Client::with_uri_str("mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=100")
                .await
                .expect("a lazy MongoDB client");
        let db = mongo.database("gdts-app-tests");
        let keys = gdts_common::keys::Keys::new("/gdts-app-tests");
        let auth = crate::auth::AuthConfig::from_lookup(&|k| {
            (k == "GDTS_ADMIN_TOKEN").then(|| ADMIN.to_string())
        })
        .expect("auth config");
        AppState {
            store: crate::store::Store::new(etcd.clone(), keys.clone(), &db),
            outputs: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
            auth: std::sync::Arc::new(auth),
            tokens: crate::tokens::Tokens::new(etcd, keys),
            audit: crate::audit::Audit::new(&db),
            streams: crate::streams::StreamLimits::new(4, 2, std::time::Duration::from_secs(30)),
            iap: None,
            metrics: std::sync::Arc::default(),
        }
    }

    /// Sends `request` (as the admin unless `token` is `None`) from a
    /// loopback address; returns the status and the body as JSON.
    async fn send(
        method: &str,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut request = request.body(Body::from(body.to_string())).unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))));
        let response = app(state().await, None).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn without_a_token_the_json_api_is_401_and_legacy_keeps_its_envelope() {
        let (status, headers, body) = send("GET", "/api/v1/jobs", None, &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["status"], 401, "{body}");
        assert!(headers.contains_key("www-authenticate"));
        let (status, _, body) = send("GET", "/job/list", None, &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["errno"], -1, "{body}");
        let (status, _, _) = send("GET", "/api/v1/jobs", Some("not-a-token"), &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn unknown_paths_and_bad_paging_name_what_is_wrong() {
        let (status, _, body) = send("GET", "/api/v1/nothing-here", Some(ADMIN), &[], "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["status"], 404, "{body}");
        for (query, field) in [
            ("page=0", "page"),
            ("page=1000001", "page"),
            ("pageSize=501", "pageSize"),
            ("pageSize=", "pageSize"),
            ("page=x", "page"),
        ] {
            let (status, _, body) = send(
                "GET",
                &format!("/api/v1/jobs?{query}"),
                Some(ADMIN),
                &[],
                "",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"]["field"], field, "{query}: {body}");
        }
    }

    #[tokio::test]
    async fn a_bad_job_body_is_refused_before_any_store_is_asked() {
        let put =
            |name: &'static str,
             headers: &'static [(&'static str, &'static str)],
             body: &'static str| { send("PUT", name, Some(ADMIN), headers, body) };
        let json = &[("content-type", "application/json")];
        // A name no job can have.
        let (status, _, body) = put("/api/v1/jobs/bad%20name", json, "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "name", "{body}");
        // Not JSON, not an object.
        let (status, _, body) = put("/api/v1/jobs/j", json, "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _, _) = put("/api/v1/jobs/j", json, "[]").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // An unknown field is named, not dropped.
        let (status, _, body) = put(
            "/api/v1/jobs/j",
            json,
            r#"{"command":"true","cronExpr":"* * * * * * *","timeoutSecond":3}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], "timeoutSecond", "{body}");
        // A bad cron expression names its field.
        let (status, _, body) = put(
            "/api/v1/jobs/j",
            json,
            r#"{"command":"true","cronExpr":"nope"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], "cronExpr", "{body}");
        // The body's name must be the path's.
        let (status, _, body) = put(
            "/api/v1/jobs/j",
            json,
            r#"{"name":"k","command":"true","cronExpr":"* * * * * * *"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], "name", "{body}");
    }

    #[tokio::test]
    async fn malformed_preconditions_are_400() {
        let body = r#"{"command":"true","cronExpr":"* * * * * * *"}"#;
        for (header, value) in [("if-match", "\"abc\""), ("if-none-match", "soon")] {
            let (status, _, answer) = send(
                "PUT",
                "/api/v1/jobs/j",
                Some(ADMIN),
                &[("content-type", "application/json"), (header, value)],
                body,
            )
            .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{header}: {value}: {answer}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        let big = format!(
            r#"{{"command":"{}","cronExpr":"* * * * * * *"}}"#,
            "x".repeat(crate::auth::DEFAULT_MAX_BODY_BYTES as usize + 1)
        );
        let (status, _, body) = send(
            "PUT",
            "/api/v1/jobs/j",
            Some(ADMIN),
            &[("content-type", "application/json")],
            &big,
        )
        .await;
        // Sent without Content-Length (as a chunked body is): the same JSON
        // refusal, for the JSON API and the legacy one.
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["status"], 413, "{body}");
        // Nobody's body is read before they are known: a stranger is
        // refused first.
        let (status, _, body) = send(
            "PUT",
            "/api/v1/jobs/j",
            None,
            &[("content-type", "application/json")],
            &big,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let form = format!(
            "name=j&command={}",
            "x".repeat(crate::auth::DEFAULT_MAX_BODY_BYTES as usize + 1)
        );
        let (status, _, body) = send(
            "POST",
            "/job/save",
            Some(ADMIN),
            &[("content-type", "application/x-www-form-urlencoded")],
            &form,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["errno"], -1, "{body}");
        // A body within the limit still reaches its handler whole (which
        // reads the schedule, at its end, and refuses it).
        let (status, _, body) = send(
            "PUT",
            "/api/v1/jobs/j",
            Some(ADMIN),
            &[("content-type", "application/json")],
            r#"{"command":"true","cronExpr":"never"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["field"], "cronExpr", "{body}");
    }
}
