//! CPU and size quantities as written in stacks (`spec/containers.md`).
//!
//! CPU is given in vCPUs (`"0.5"`, `"2"`, or a JSON number) or millicores (`"500m"`) and parsed to
//! millicores. Sizes are bytes (`"1048576"`), binary (`Ki Mi Gi Ti Pi`) or decimal (`k M G T P`)
//! multiples, with an optional decimal part (`"1.5Gi"`), parsed to bytes. Parsing is exact integer
//! arithmetic: a value that is not a whole number of millicores or bytes is rejected, never
//! rounded. Zero parses; rules that need a positive value check it where they apply.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Number;

/// What a quantity measures, which decides its units and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityKind {
    /// CPU, parsed to millicores.
    Cpu,
    /// A memory or storage size, parsed to bytes.
    Size,
}

impl QuantityKind {
    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Size => "size",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Cpu => "millicore",
            Self::Size => "byte",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Cpu => "vCPUs like \"0.5\" or \"2\", or millicores like \"500m\"",
            Self::Size => {
                "bytes like \"1048576\", or a number with a suffix Ki, Mi, Gi, Ti, Pi (binary) \
                 or k, M, G, T, P (decimal), like \"512Mi\" or \"1.5Gi\""
            }
        }
    }

    /// The multiplier a suffix stands for.
    fn multiplier(self, suffix: &str) -> Option<u64> {
        match (self, suffix) {
            (Self::Cpu, "") => Some(1000),
            (Self::Cpu, "m") => Some(1),
            (Self::Size, "") => Some(1),
            (Self::Size, "k") => Some(1000),
            (Self::Size, "M") => Some(1000_u64.pow(2)),
            (Self::Size, "G") => Some(1000_u64.pow(3)),
            (Self::Size, "T") => Some(1000_u64.pow(4)),
            (Self::Size, "P") => Some(1000_u64.pow(5)),
            (Self::Size, "Ki") => Some(1 << 10),
            (Self::Size, "Mi") => Some(1 << 20),
            (Self::Size, "Gi") => Some(1 << 30),
            (Self::Size, "Ti") => Some(1 << 40),
            (Self::Size, "Pi") => Some(1 << 50),
            _ => None,
        }
    }
}

/// Why a quantity does not parse. Each message names what was given and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing was given.
    #[error("empty {}; expected {}", kind.name(), kind.expected())]
    Empty {
        /// What was being parsed.
        kind: QuantityKind,
    },
    /// A minus sign.
    #[error("{} {given:?} is negative; expected {}", kind.name(), kind.expected())]
    Negative {
        /// What was being parsed.
        kind: QuantityKind,
        /// The input.
        given: String,
    },
    /// Not a decimal number followed by a suffix.
    #[error("{} {given:?} is not a number; expected {}", kind.name(), kind.expected())]
    Malformed {
        /// What was being parsed.
        kind: QuantityKind,
        /// The input.
        given: String,
    },
    /// A suffix that is not a known unit.
    #[error("{} {given:?} has the unknown suffix {suffix:?}; expected {}", kind.name(), kind.expected())]
    UnknownSuffix {
        /// What was being parsed.
        kind: QuantityKind,
        /// The input.
        given: String,
        /// The suffix that was not recognised.
        suffix: String,
    },
    /// A value finer than the unit (1 millicore or 1 byte).
    #[error("{} {given:?} is not a whole number of {}s", kind.name(), kind.unit())]
    Fractional {
        /// What was being parsed.
        kind: QuantityKind,
        /// The input.
        given: String,
    },
    /// A value that does not fit in 64 bits of millicores or bytes.
    #[error("{} {given:?} is too large", kind.name())]
    TooLarge {
        /// What was being parsed.
        kind: QuantityKind,
        /// The input.
        given: String,
    },
}

/// Parses a CPU quantity (`"0.5"`, `"2"`, `"500m"`) to millicores.
pub fn parse_cpu_millis(value: &str) -> Result<u64, QuantityError> {
    parse(QuantityKind::Cpu, value)
}

/// Parses a size (`"512Mi"`, `"1.5Gi"`, `"10G"`, `"1048576"`) to bytes.
pub fn parse_bytes(value: &str) -> Result<u64, QuantityError> {
    parse(QuantityKind::Size, value)
}

/// Decimal places beyond this cannot make a whole number of bytes or millicores in practice.
const MAX_FRACTION_DIGITS: usize = 18;

fn parse(kind: QuantityKind, given: &str) -> Result<u64, QuantityError> {
    let malformed = || QuantityError::Malformed { kind, given: given.to_owned() };
    if given.is_empty() {
        return Err(QuantityError::Empty { kind });
    }
    if given.starts_with('-') {
        return Err(QuantityError::Negative { kind, given: given.to_owned() });
    }
    let number_end = given.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(given.len());
    let (number, suffix) = given.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(malformed());
    }
    let multiplier = kind.multiplier(suffix).ok_or_else(|| QuantityError::UnknownSuffix {
        kind,
        given: given.to_owned(),
        suffix: suffix.to_owned(),
    })?;
    let too_large = || QuantityError::TooLarge { kind, given: given.to_owned() };
    let fractional = || QuantityError::Fractional { kind, given: given.to_owned() };

    let whole = digits_value(whole).ok_or_else(too_large)?;
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > MAX_FRACTION_DIGITS {
        return Err(fractional());
    }
    let scale = 10_u128.pow(u32::try_from(fraction.len()).map_err(|_| fractional())?);
    let fraction_part = digits_value(fraction).ok_or_else(fractional)? * u128::from(multiplier);
    if fraction_part % scale != 0 {
        return Err(fractional());
    }
    let total = whole
        .checked_mul(u128::from(multiplier))
        .and_then(|w| w.checked_add(fraction_part / scale))
        .ok_or_else(too_large)?;
    u64::try_from(total).map_err(|_| too_large())
}

/// The value of a string of ASCII digits (`""` is 0), or `None` if it overflows.
fn digits_value(digits: &str) -> Option<u128> {
    digits
        .bytes()
        .try_fold(0_u128, |acc, digit| acc.checked_mul(10)?.checked_add(u128::from(digit - b'0')))
}

/// A quantity as written in a stack: a string (`"500m"`, `"1Gi"`) or a JSON number (`0.5`, `2`).
///
/// Kept as written so that a stack serializes back to exactly what the SDK produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityValue {
    /// A string such as `"0.5"`, `"500m"` or `"512Mi"`.
    Text(String),
    /// A JSON number: vCPUs for CPU, bytes for sizes.
    Number(Number),
}

impl QuantityValue {
    /// Millicores, reading this value as CPU.
    pub fn cpu_millis(&self) -> Result<u64, QuantityError> {
        self.parse(QuantityKind::Cpu)
    }

    /// Bytes, reading this value as a size.
    pub fn bytes(&self) -> Result<u64, QuantityError> {
        self.parse(QuantityKind::Size)
    }

    fn parse(&self, kind: QuantityKind) -> Result<u64, QuantityError> {
        match self {
            Self::Text(text) => parse(kind, text),
            Self::Number(number) => parse(kind, &decimal_text(number)),
        }
    }
}

/// A JSON number in plain decimal notation (`f64` display never uses an exponent).
fn decimal_text(number: &Number) -> String {
    if let Some(n) = number.as_u64() {
        n.to_string()
    } else if let Some(n) = number.as_i64() {
        n.to_string()
    } else {
        number.as_f64().map(|f| f.to_string()).unwrap_or_else(|| number.to_string())
    }
}

impl fmt::Display for QuantityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => write!(f, "{text:?}"),
            Self::Number(number) => write!(f, "{number}"),
        }
    }
}

impl From<&str> for QuantityValue {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl Serialize for QuantityValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Number(number) => number.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(QuantityVisitor)
    }
}

struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = QuantityValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quantity: a string like \"500m\" or \"512Mi\", or a number")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(QuantityValue::Text(value.to_owned()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(QuantityValue::Number(value.into()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(QuantityValue::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Number::from_f64(value)
            .map(QuantityValue::Number)
            .ok_or_else(|| E::custom("a quantity must be a finite number"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cpu_in_vcpus_and_millicores() {
        for (given, millis) in [
            ("0.5", 500),
            ("2", 2000),
            ("500m", 500),
            ("0", 0),
            ("1.25", 1250),
            (".5", 500),
            ("1.", 1000),
            ("0.001", 1),
            ("1.5000", 1500),
            ("007", 7000),
            ("2500m", 2500),
        ] {
            assert_eq!(parse_cpu_millis(given), Ok(millis), "{given}");
        }
    }

    #[test]
    fn sizes_in_binary_decimal_and_plain_bytes() {
        for (given, bytes) in [
            ("512Mi", 512 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("16Gi", 16 << 30),
            ("500Gi", 500 << 30),
            ("1Ti", 1 << 40),
            ("2Pi", 2 << 50),
            ("1Ki", 1024),
            ("10k", 10_000),
            ("1.5M", 1_500_000),
            ("3G", 3_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1048576", 1_048_576),
            ("0", 0),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_bytes(given), Ok(bytes), "{given}");
        }
    }

    #[test]
    fn errors_say_what_was_given_and_what_is_expected() {
        let cases = [
            ("", QuantityError::Empty { kind: QuantityKind::Size }),
            ("-1Gi", QuantityError::Negative { kind: QuantityKind::Size, given: "-1Gi".into() }),
            ("Gi", QuantityError::Malformed { kind: QuantityKind::Size, given: "Gi".into() }),
            ("1.2.3", QuantityError::Malformed { kind: QuantityKind::Size, given: "1.2.3".into() }),
            (
                "1GB",
                QuantityError::UnknownSuffix {
                    kind: QuantityKind::Size,
                    given: "1GB".into(),
                    suffix: "GB".into(),
                },
            ),
            (" 1Gi", QuantityError::Malformed { kind: QuantityKind::Size, given: " 1Gi".into() }),
            ("0.5", QuantityError::Fractional { kind: QuantityKind::Size, given: "0.5".into() }),
            (
                "18446744073709551616",
                QuantityError::TooLarge {
                    kind: QuantityKind::Size,
                    given: "18446744073709551616".into(),
                },
            ),
            (
                "20000Pi",
                QuantityError::TooLarge { kind: QuantityKind::Size, given: "20000Pi".into() },
            ),
        ];
        for (given, expected) in cases {
            assert_eq!(parse_bytes(given), Err(expected), "{given:?}");
        }
        let message = parse_bytes("1GB").unwrap_err().to_string();
        assert!(message.contains("\"1GB\"") && message.contains("Gi"), "{message}");
        let message = parse_cpu_millis("1Gi").unwrap_err().to_string();
        assert!(message.contains("\"Gi\"") && message.contains("500m"), "{message}");
        let message = parse_cpu_millis("0.0005").unwrap_err().to_string();
        assert_eq!(message, "cpu \"0.0005\" is not a whole number of millicores");
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        assert!(matches!(parse_bytes(&"9".repeat(100)), Err(QuantityError::TooLarge { .. })));
        let tiny = format!("0.{}1", "0".repeat(100));
        assert!(matches!(parse_bytes(&tiny), Err(QuantityError::Fractional { .. })));
        let zeros = format!("1.{}", "0".repeat(100));
        assert_eq!(parse_bytes(&zeros), Ok(1));
        assert!(parse_cpu_millis("1e3").is_err());
    }

    #[test]
    fn values_from_json_strings_and_numbers() {
        let cases =
            [(json!("500m"), 500), (json!(2), 2000), (json!(0.5), 500), (json!(1e3), 1_000_000)];
        for (json, millis) in cases {
            let value: QuantityValue = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(value.cpu_millis(), Ok(millis), "{json}");
            assert_eq!(serde_json::to_value(&value).unwrap(), json, "round trip of {json}");
        }
        let bytes: QuantityValue = serde_json::from_value(json!(1048576)).unwrap();
        assert_eq!(bytes.bytes(), Ok(1 << 20));
        let negative: QuantityValue = serde_json::from_value(json!(-1)).unwrap();
        assert!(matches!(negative.cpu_millis(), Err(QuantityError::Negative { .. })));
        let huge: QuantityValue = serde_json::from_value(json!(1e300)).unwrap();
        assert!(matches!(huge.bytes(), Err(QuantityError::TooLarge { .. })));
        let err = serde_json::from_value::<QuantityValue>(json!(true)).unwrap_err();
        assert!(err.to_string().contains("a quantity"), "{err}");
    }
}
