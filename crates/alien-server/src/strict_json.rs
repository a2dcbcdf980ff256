//! JSON request bodies read as the API document says, where serde's defaults are looser.
//!
//! Two differences from `serde_json::from_slice`:
//! - an object type takes a JSON object only: serde's derived structs also take an array of
//!   their fields in order (`"rollout": [1, 0]`), which the document does not allow;
//! - a whole number written with a zero fraction (`30.0`) is an integer, as JSON Schema's
//!   `integer` says.
//!
//! A body is read through a [`serde_json::Value`] by [`Strict`] only when it has to be: when it
//! holds an array (where a struct could hide) or when the direct parse failed. Other bodies take
//! the direct parse, which is exact for them.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value;

/// Why a body does not parse.
#[derive(Debug)]
pub enum BodyError {
    /// Not JSON at all.
    Syntax(String),
    /// JSON of the wrong shape: the path (`rollout.batchSize`, empty for the root) and why.
    Data {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
}

/// Parses `body` as `T` (see the module documentation).
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    if !body.contains(&b'[') {
        match serde_json::from_slice(body) {
            Ok(value) => return Ok(value),
            Err(err) if !err.is_data() => return Err(BodyError::Syntax(err.to_string())),
            Err(_) => {} // read again strictly: a zero fraction may be all that is wrong
        }
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|err| BodyError::Syntax(err.to_string()))?;
    serde_path_to_error::deserialize(Strict(value)).map_err(|err| {
        let path = err.path().to_string();
        BodyError::Data {
            path: if path == "." { String::new() } else { path },
            message: err.into_inner().to_string(),
        }
    })
}

/// A JSON value deserialized strictly.
struct Strict(Value);

impl<'de> IntoDeserializer<'de, de::value::Error> for Strict {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => {
            n.as_f64().map_or(de::Unexpected::Other("number"), de::Unexpected::Float)
        }
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

impl<'de> Deserializer<'de> for Strict {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    // 2^64 and -2^63 as floats: within them `as` is exact for whole numbers.
                    if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                        visitor.visit_u64(f as u64)
                    } else if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                        visitor.visit_i64(f as i64)
                    } else {
                        visitor.visit_f64(f)
                    }
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter().map(Strict));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(fields) => {
                let mut map = MapDeserializer::new(fields.into_iter().map(|(k, v)| (k, Strict(v))));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Object(fields) if fields.len() == 1 => {
                let map = MapDeserializer::new(fields.into_iter().map(|(k, v)| (k, Strict(v))));
                visitor.visit_enum(de::value::MapAccessDeserializer::new(map))
            }
            other => {
                Err(de::Error::invalid_type(unexpected(&other), &"a string or a one-key object"))
            }
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Inner {
        batch_size: Option<u32>,
        pause: Option<bool>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        seconds: Option<u64>,
        #[serde(default)]
        kind: Option<Kind>,
        #[serde(default)]
        raw: Option<Value>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Plain,
    }

    fn parse(text: &str) -> Result<Body, BodyError> {
        from_slice(text.as_bytes())
    }

    #[test]
    fn objects_take_objects_only_at_every_depth() {
        let ok =
            parse(r#"{"inner": {"batchSize": 2}, "list": [{"pause": true}], "kind": "plain"}"#)
                .unwrap();
        assert_eq!(ok.inner, Some(Inner { batch_size: Some(2), pause: None }));
        assert_eq!(ok.list, vec![Inner { batch_size: None, pause: Some(true) }]);
        assert_eq!(ok.kind, Some(Kind::Plain));
        for (text, at) in [
            (r#"{"inner": [2, true]}"#, "inner"),
            (r#"{"list": [[2, true]]}"#, "list[0]"),
            (r#"[null, [], [], null, null, null]"#, ""),
        ] {
            match parse(text) {
                Err(BodyError::Data { path, message }) => {
                    assert_eq!(path, at, "{text}: {message}");
                    assert!(message.contains("invalid type: sequence"), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn whole_numbers_with_a_zero_fraction_are_integers() {
        assert_eq!(parse(r#"{"seconds": 30.0}"#).unwrap().seconds, Some(30));
        assert_eq!(parse(r#"{"seconds": 30}"#).unwrap().seconds, Some(30));
        assert!(matches!(parse(r#"{"seconds": 30.5}"#), Err(BodyError::Data { .. })));
        assert!(matches!(parse(r#"{"seconds": -1.0}"#), Err(BodyError::Data { .. })));
        assert!(matches!(parse(r#"{"seconds": 1e30}"#), Err(BodyError::Data { .. })));
        // Free-form values keep what was sent.
        assert_eq!(
            parse(r#"{"raw": [1.5, "x"]}"#).unwrap().raw,
            Some(serde_json::json!([1.5, "x"]))
        );
    }

    #[test]
    fn unknown_fields_and_syntax_errors_are_refused() {
        assert!(matches!(parse(r#"{"nope": [1]}"#), Err(BodyError::Data { .. })));
        assert!(matches!(parse(r#"{"nope": 1}"#), Err(BodyError::Data { .. })));
        assert!(matches!(parse(r#"{"list": ["#), Err(BodyError::Syntax(_))));
        assert!(matches!(parse("{"), Err(BodyError::Syntax(_))));
    }
}
