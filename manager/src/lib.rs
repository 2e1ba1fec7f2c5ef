//! The manager as a library: [`app::app`] builds its whole HTTP surface
//! from an [`state::AppState`], which `main.rs` serves and tests call in
//! process. Layers, from the bottom: the stores (`store.rs`, `tokens.rs`,
//! `audit.rs`), what handlers share (`state.rs`, `reply.rs`), the handlers
//! (`api.rs`, `api_v1.rs` and the endpoint modules), and `app.rs`.

mod access_api;
mod api;
mod api_v1;
pub mod app;
pub mod audit;
mod auth;
pub mod config;
mod contract;
mod events;
mod gate;
pub mod iap;
pub mod job_index;
mod metrics;
pub mod outputs;
mod reply;
pub mod state;
mod stats;
pub mod store;
pub mod streams;
pub mod tokens;
