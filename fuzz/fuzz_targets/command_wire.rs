//! The `arc.v1` wire types on untrusted bytes: the bodies the commands API extracts
//! (`CreateCommandRequest`, `LeaseRequest`, `UploadComplete`, `CommandResponse`) with the checks
//! the engine makes on them before it touches a store (`CommandEngine::check_create`,
//! `check_lease`, `check_response`), and the answers a receiver parses (`CreateCommandResponse`,
//! `LeaseResponse`, `CommandStatusResponse`).
//!
//! Invariant: every wire type reads back what it writes (a receiver and the manager agree).

#![no_main]

use std::fmt::Debug;

use alien_commands::CommandEngine;
use alien_commands::wire::{
    CommandResponse, CommandStatusResponse, CreateCommandRequest, CreateCommandResponse,
    LeaseRequest, LeaseResponse, UploadComplete,
};
use alien_fuzz::assert_reads_back;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `T` from `data`, if it is one, after checking that it reads back as written.
fn read<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    assert_reads_back(&value);
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    if let Some(request) = read::<CreateCommandRequest>(data) {
        let _ = CommandEngine::check_create(&request);
    }
    if let Some(request) = read::<LeaseRequest>(data) {
        let _ = CommandEngine::check_lease(&request);
    }
    if let Some(response) = read::<CommandResponse>(data) {
        let _ = CommandEngine::check_response(&response);
    }
    let _ = read::<UploadComplete>(data);
    let _ = read::<CreateCommandResponse>(data);
    let _ = read::<LeaseResponse>(data);
    let _ = read::<CommandStatusResponse>(data);
});
