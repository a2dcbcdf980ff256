//! The HTTP server of alien-manager (axum on hyper).
//!
//! Owns the route table, the tower layers every request passes (request ids, tracing, metrics,
//! compression, body limits, timeouts, panic catching, JSON error bodies), the operational
//! routes (`/health`, `/ready`, `/metrics`) and the [`ManagerBuilder`] through which every
//! subsystem is plugged in as a trait object. Business rules live in the domain crates; handlers
//! here only extract, call one domain function and map its error.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod builder;
mod connections;
pub mod error;
pub mod install;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod registry;
mod strict_json;
pub mod tls;

pub use builder::{
    BoundManager, EarlyServer, Manager, ManagerBuilder, ServerError, Serving, bind_listener,
    serve_early, shutdown_signal,
};
pub use error::{ApiJson, HttpError};
pub use metrics::MetricsRegistry;
pub use ops::ReadinessCheck;
