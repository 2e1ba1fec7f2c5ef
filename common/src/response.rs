//! The response envelope of the legacy HTTP API.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// 0 on success, -1 on error.
    pub errno: i32,
    pub msg: String,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Envelope {
            errno: 0,
            msg: "success".into(),
            data,
        }
    }
}

impl Envelope<()> {
    pub fn error(msg: impl Into<String>) -> Envelope<Option<()>> {
        Envelope {
            errno: -1,
            msg: msg.into(),
            data: None,
        }
    }
}
