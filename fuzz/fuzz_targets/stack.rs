//! `POST /v1/releases` on untrusted bytes: the body as the API extracts it (`ApiJson`, serde_json
//! into `CreateRelease`), then `CreateRelease::validate` (every stack parsed and checked), then
//! `check_update_compatible` between the stacks it accepted, as for a release following another.
//! The same bytes as one stack: `parse_stack`, `Stack::validate`, `Stack::validate_for_release`,
//! and the `Deserialize` the store and the agents read stacks back with.
//!
//! Invariants: a parsed stack reads back as the same stack once serialized (what the store writes,
//! it can read); a valid one serializes to the JSON it was parsed from (an explicit `null` of an
//! optional field comes back absent); a stack is compatible with itself.

#![no_main]

use alien_core::CreateRelease;
use alien_core::stack::{Stack, check_update_compatible, parse_stack};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<CreateRelease>(data)
        && let Ok(release) = body.validate()
    {
        for stack in release.stack.values() {
            let with_itself = check_update_compatible(stack, stack);
            assert!(with_itself.is_empty(), "a stack is incompatible with itself: {with_itself:?}");
            for other in release.stack.values() {
                let _ = check_update_compatible(stack, other);
            }
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(stack) = parse_stack(&value) {
        let valid = stack.validate().is_empty();
        let _ = stack.validate_for_release();
        let written = serde_json::to_value(&stack).expect("a stack serializes");
        // An invalid stack may gain a default (`ports: []` where it had none).
        if valid {
            assert_eq!(
                without_nulls(written.clone()),
                without_nulls(value.clone()),
                "a valid stack serializes to the JSON it was parsed from"
            );
        }
        let read: Stack = serde_json::from_value(written).expect("a written stack reads back");
        assert_eq!(read, stack, "a written stack reads back as the same stack");
    }
    let _ = serde_json::from_value::<Stack>(value);
});

/// `value` without the object members that are `null`, at every depth.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}
