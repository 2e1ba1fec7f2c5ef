//! What the OpenAPI document promises beyond what each handler's annotation
//! says: the rules every operation shares, added in one place so no
//! operation can forget one. A contract fuzzer (schemathesis, in
//! `tests/tests/api_contract.rs`) holds the server to the result.
//!
//! - Security: every operation needs a bearer token or the web UI's session
//!   cookie, and may answer 401 and 403, except the public ones.
//! - Every operation may answer 503 (a backing store is down), every one
//!   with a body 413 (over `GDTS_MAX_BODY_BYTES`).
//! - A job name in a path has the name rules as a pattern, and the
//!   operation documents 400 for a name that breaks them.
//! - `page` and `pageSize` carry their bounds.

use serde_json::{json, Map, Value};

/// A job name: 1 to 128 of `A-Za-z0-9._-`, but not `.` or `..`. Written
/// without look-ahead, which not every schema tool's regex engine has.
macro_rules! job_name_alternatives {
    () => {
        r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,126}|\.\.[A-Za-z0-9._-]{1,126}"
    };
}
pub const JOB_NAME_PATTERN: &str = concat!("^(", job_name_alternatives!(), ")$");
/// A job name or nothing (`after=` is the same as leaving it out).
const JOB_NAME_OR_EMPTY_PATTERN: &str = concat!("^(", job_name_alternatives!(), "|)$");

/// Operations anyone may call: (method, path in the document).
const PUBLIC: &[(&str, &str)] = &[
    ("get", "/session"),
    ("post", "/session"),
    ("delete", "/session"),
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ApiError" } } }
    })
}

fn add_response(op: &mut Map<String, Value>, status: &str, description: &str) {
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    responses
        .entry(status)
        .or_insert_with(|| error_response(description));
}

/// The document with the shared rules applied.
pub fn apply(mut doc: Value) -> Value {
    let components = doc
        .as_object_mut()
        .expect("the document is an object")
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("components is an object");
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`POST /tokens`) or the bootstrap GDTS_ADMIN_TOKEN"
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "gdts_session",
                "description": "The web UI's session (`POST /session`); changes also need the X-GDTS-CSRF header"
            }
        }),
    );
    doc["security"] = json!([{ "bearer": [] }, { "session": [] }]);

    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                continue;
            }
            if PUBLIC.contains(&(method.as_str(), path.as_str())) {
                op.insert("security".into(), json!([]));
            } else {
                add_response(op, "401", "no valid token or session");
                add_response(
                    op,
                    "403",
                    "the caller's role may not do this, or a cross-site change",
                );
            }
            add_response(op, "503", "a backing store is unavailable; try again");
            if op.contains_key("requestBody") {
                add_response(op, "413", "the body is over GDTS_MAX_BODY_BYTES");
            }
            let mut names_a_job = false;
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params.iter_mut() {
                    // A query or header value is text or absent, never
                    // JSON null: `Option<String>` says `["string", "null"]`.
                    if let Some(types) = p["schema"]["type"].as_array() {
                        let kept: Vec<Value> =
                            types.iter().filter(|t| *t != "null").cloned().collect();
                        if kept.len() == 1 {
                            p["schema"]["type"] = kept[0].clone();
                        }
                    }
                    let (name, location) = (
                        p["name"].as_str().unwrap_or_default().to_string(),
                        p["in"].as_str().unwrap_or_default().to_string(),
                    );
                    match (name.as_str(), location.as_str()) {
                        ("name", "path") => {
                            names_a_job = true;
                            p["schema"] = json!({
                                "type": "string",
                                "pattern": JOB_NAME_PATTERN,
                                "minLength": 1,
                                "maxLength": gdts_common::limits::MAX_JOB_NAME_LEN,
                            });
                        }
                        ("after", "query") => {
                            p["schema"] = json!({
                                "type": "string",
                                "pattern": JOB_NAME_OR_EMPTY_PATTERN,
                                "maxLength": gdts_common::limits::MAX_JOB_NAME_LEN,
                            });
                        }
                        ("page", "query") => {
                            p["schema"] = json!({
                                "type": "integer",
                                "minimum": 1,
                                "maximum": crate::reply::MAX_PAGE,
                            });
                        }
                        ("pageSize", "query") => {
                            p["schema"] = json!({
                                "type": "integer",
                                "minimum": 1,
                                "maximum": crate::reply::MAX_PAGE_SIZE,
                            });
                        }
                        _ => {}
                    }
                }
            }
            if names_a_job {
                add_response(op, "400", "the job name breaks the name rules");
            }
        }
    }
    // Saving refuses fields a job does not have (422 naming the field): the
    // request body's schema says so. Inlined, not set on JobSpec itself:
    // JobView embeds JobSpec, and its answers carry more fields.
    if let Some(spec) = doc.pointer("/components/schemas/JobSpec").cloned() {
        let mut strict = spec;
        strict["additionalProperties"] = json!(false);
        if let Some(schema) = doc
            .pointer_mut("/paths/~1jobs~1{name}/put/requestBody/content/application~1json/schema")
        {
            *schema = strict;
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_pattern_is_the_name_rules() {
        let re = regex::Regex::new(JOB_NAME_PATTERN).unwrap();
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        let dots_long = format!("..{}", "b".repeat(126));
        for name in [
            "a",
            ".",
            "..",
            "...",
            ".a",
            "..a",
            "a.",
            "a..b",
            "-",
            "_",
            "a b",
            "",
            "é",
            "a/b",
            ".-",
            "..-",
            long.as_str(),
            too_long.as_str(),
            dots_long.as_str(),
            "x\n",
        ] {
            assert_eq!(
                re.is_match(name),
                gdts_common::JobName::parse(name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn every_protected_operation_documents_401_and_403() {
        let doc = json!({
            "paths": {
                "/jobs/{name}": { "get": {
                    "parameters": [{ "name": "name", "in": "path", "schema": { "type": "string" } }],
                    "responses": { "200": { "description": "ok" } } } },
                "/session": { "get": { "responses": { "200": { "description": "ok" } } } }
            }
        });
        let out = apply(doc);
        let job = &out["paths"]["/jobs/{name}"]["get"];
        for status in ["400", "401", "403", "503"] {
            assert!(job["responses"].get(status).is_some(), "{status}");
        }
        assert_eq!(job["parameters"][0]["schema"]["pattern"], JOB_NAME_PATTERN);
        let session = &out["paths"]["/session"]["get"];
        assert_eq!(session["security"], json!([]));
        assert!(session["responses"].get("401").is_none());
        assert!(out["components"]["securitySchemes"]["bearer"].is_object());
    }
}
