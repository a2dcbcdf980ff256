//! What the fuzz targets share: the check that a wire value reads back as it was written.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Serializes `value` to JSON text, reads it back as a `T`, and panics unless the two are the
/// same: the manager and the agents (or receivers) agree on what was sent.
///
/// Floats compare within a few units in the last place: serde_json parses floats on a best-effort
/// basis (exact only with its `float_roundtrip` feature), so `1.1111111111111109e104` written
/// out reads back as `1.111111111111111e104`.
pub fn assert_reads_back<T: Serialize + DeserializeOwned + Debug>(value: &T) {
    let written = serde_json::to_vec(value).expect("a wire value serializes");
    let read: T = serde_json::from_slice(&written).unwrap_or_else(|e| {
        panic!("a written value does not read back ({e}): {}", String::from_utf8_lossy(&written))
    });
    let (before, after) = (json(value), json(&read));
    assert!(same(&before, &after), "read back differently:\n{before}\n{after}");
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("a wire value serializes")
}

/// Equal JSON, floats within 4 units in the last place.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
