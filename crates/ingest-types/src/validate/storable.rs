//! Storability: what PostgreSQL can hold unchanged. The gateway answers `success` only
//! for items the worker can store exactly as sent, so these limits are validation rules,
//! not surprises for the worker's dead-letter topic.
//!
//! - Text (`text` columns and strings inside `jsonb`) cannot contain U+0000.
//! - Numbers go into `jsonb`, which holds them as exact `numeric`: at most 131,072 digits
//!   before the decimal point and 16,383 after it (PostgreSQL answers "value overflows
//!   numeric format" beyond). Within that every JSON number is stored with its exact
//!   decimal value (its text may be normalized: `1e2` reads back as `100`, `-0` as `0`).
//! - `timestamptz` holds microseconds; the worker writes years 0001–9999 (UTC).
//! - An object whose text repeats a key has no one value to store: the parser would keep
//!   the last silently.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeDelta, Timelike, Utc};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// PostgreSQL `numeric`: most digits before the decimal point.
pub const MAX_INTEGER_DIGITS: i64 = 131_072;
/// PostgreSQL `numeric`: most digits after the decimal point (its largest display scale).
pub const MAX_FRACTION_DIGITS: i64 = 16_383;

/// Whether a string can be stored in a `text` column or a `jsonb` string: no U+0000.
pub fn is_storable_str(s: &str) -> bool {
    !s.contains('\0')
}

/// Whether `number` (kept as the text it was sent as) fits PostgreSQL's `numeric` exactly.
pub fn is_storable_number(number: &Number) -> bool {
    fits_numeric(number.as_str())
}

/// The decimal shape of a JSON number's text, checked against `numeric`'s limits: the
/// digits after the point (`fraction digits − exponent`) and the digits before it (the
/// position of the first significant digit + exponent). Zero only has a scale.
fn fits_numeric(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], &unsigned[at + 1..]),
        None => (unsigned, "0"),
    };
    // Exponents beyond i32 are far outside both limits, whatever the mantissa.
    let Ok(exponent) = exponent
        .strip_prefix('+')
        .unwrap_or(exponent)
        .parse::<i32>()
    else {
        return false;
    };
    let exponent = i64::from(exponent);
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let scale = (fraction.len() as i64 - exponent).max(0);
    if scale > MAX_FRACTION_DIGITS {
        return false;
    }
    let digits = integer.bytes().chain(fraction.bytes());
    let Some(first) = digits.clone().position(|d| d != b'0') else {
        return true; // zero
    };
    let integer_digits = integer.len() as i64 - first as i64 + exponent;
    integer_digits <= MAX_INTEGER_DIGITS
}

/// The instant the worker stores for a date that was sent as `date`, or `None` when it
/// cannot be stored: before 0001-01-01T00:00:00Z or after 9999-12-31T23:59:59.999999Z once
/// in UTC. Digits below the microsecond are dropped (truncated, as `timestamptz` cannot
/// hold them); a leap second (`23:59:60`) becomes the next second, as PostgreSQL reads it.
pub fn storable_instant(date: DateTime<FixedOffset>) -> Option<DateTime<Utc>> {
    let date = date.with_timezone(&Utc);
    let nanos = date.nanosecond();
    let (leap, nanos) = (nanos >= 1_000_000_000, nanos % 1_000_000_000);
    let date = date.with_nanosecond(nanos - nanos % 1_000)?
        + if leap {
            TimeDelta::seconds(1)
        } else {
            TimeDelta::zero()
        };
    let first = NaiveDate::from_ymd_opt(1, 1, 1)?
        .and_hms_opt(0, 0, 0)?
        .and_utc();
    let last = NaiveDate::from_ymd_opt(9999, 12, 31)?
        .and_hms_micro_opt(23, 59, 59, 999_999)?
        .and_utc();
    (first..=last).contains(&date).then_some(date)
}

/// Whether any object in the JSON text `text` repeats a key (at any depth). `text` must
/// be well-formed JSON; text that is not is reported as not having duplicates (the
/// parser's own error decides then).
pub fn has_duplicate_keys(text: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    match NoDuplicateKeys::deserialize(&mut de) {
        Ok(_) => false,
        Err(err) => err.is_data(),
    }
}

/// Walks a JSON value, failing with a data error at the first object that repeats a key.
/// (Numbers kept as text arrive as a one-entry map; they never repeat a key.)
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            keys.push(key);
            map.next_value::<NoDuplicateKeys>()?;
        }
        // Sorting keeps a many-key object (32 KiB of `"k":0,`) at n log n.
        keys.sort_unstable();
        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(de::Error::custom("duplicate key"));
        }
        Ok(self)
    }
}

/// Parses JSON text into a [`Value`] and says whether any object in it repeats a key, in
/// one pass: the same value `serde_json::from_str::<Value>` gives (a repeated key keeps
/// its last value), and the same answer as [`has_duplicate_keys`], without reading the
/// text twice.
pub fn parse_noting_duplicate_keys(text: &str) -> Result<(Value, bool), serde_json::Error> {
    let repeated = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Noting(&repeated).deserialize(&mut de)?;
    de.end()?;
    Ok((value, repeated.get()))
}

/// Builds a [`Value`] as serde_json's own visitor does, noting repeated object keys.
#[derive(Clone, Copy)]
struct Noting<'a>(&'a Cell<bool>);

/// The key under which serde_json hands a number kept as text (`arbitrary_precision`).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> DeserializeSeed<'de> for Noting<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Noting<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(value) = seq.next_element_seed(self)? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let Some(Key(first)) = map.next_key()? else {
            return Ok(Value::Object(object));
        };
        if first == NUMBER_TOKEN {
            let text: String = map.next_value()?;
            return text
                .parse::<Number>()
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        object.insert(first.into_owned(), map.next_value_seed(self)?);
        while let Some(Key(key)) = map.next_key()? {
            let value = map.next_value_seed(self)?;
            if object.insert(key.into_owned(), value).is_some() {
                self.0.set(true);
            }
        }
        Ok(Value::Object(object))
    }
}

/// An object key, borrowed from the text unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_nul() {
        assert!(is_storable_str(""));
        assert!(is_storable_str("a\u{1}b\u{7f}é😀"));
        assert!(!is_storable_str("a\u{0}b"));
        assert!(!is_storable_str("\u{0}"));
    }

    #[test]
    fn numbers_within_numeric() {
        // Measured against PostgreSQL 15: `SELECT '<text>'::jsonb`.
        for ok in [
            "0",
            "-0",
            "1",
            "-9223372036854775809",
            "18446744073709551616",
            "123456789012345678901234567890",
            "0.12345678901234567890123",
            "1e-400",
            "1e131071",
            "9e131071",
            "100e131069",
            "1e-16383",
            "1.0e-16382",
            "0.5e-16382",
            "0e999999",
            "1E+5",
            "0.001e131074",
        ] {
            assert!(fits_numeric(ok), "{ok}");
        }
        for bad in [
            "1e131072",
            "100e131070",
            "1e200000",
            "1e-16384",
            "1.5e-16383",
            "1.00e-16382",
            "12e-16384",
            "0e-99999",
            "1e99999999999",
            "1e-99999999999",
        ] {
            assert!(!fits_numeric(bad), "{bad}");
        }
    }

    fn instant(text: &str) -> Option<String> {
        let date = DateTime::parse_from_rfc3339(text).unwrap();
        storable_instant(date).map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
    }

    #[test]
    fn dates_within_years_1_to_9999() {
        assert_eq!(
            instant("0001-01-01T00:00:00Z").as_deref(),
            Some("0001-01-01T00:00:00.000000Z")
        );
        assert_eq!(instant("0000-12-31T23:59:59.999999Z"), None);
        assert_eq!(instant("0000-01-01T00:00:00Z"), None);
        assert_eq!(instant("0001-01-01T00:00:00+01:00"), None);
        assert_eq!(
            instant("9999-12-31T23:59:59.999999Z").as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(instant("9999-12-31T23:59:59-01:00"), None);
    }

    #[test]
    fn dates_truncate_to_microseconds_and_take_leap_seconds_forward() {
        assert_eq!(
            instant("2026-11-24T10:00:00.123456789+02:00").as_deref(),
            Some("2026-11-24T08:00:00.123456Z")
        );
        assert_eq!(
            instant("2016-12-31T23:59:60Z").as_deref(),
            Some("2017-01-01T00:00:00.000000Z")
        );
        assert_eq!(
            instant("2016-12-31T23:59:60.5Z").as_deref(),
            Some("2017-01-01T00:00:00.500000Z")
        );
    }

    #[test]
    fn duplicate_keys_at_any_depth() {
        for dup in [
            r#"{"_user_id":"a","_user_id":"b"}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"p":{"x":1,"x":1}}"#,
            r#"[{"x":1},{"y":1,"y":2}]"#,
            // The same key, once escaped.
            r#"{"ab":1,"a\u0062":2}"#,
        ] {
            assert!(has_duplicate_keys(dup), "{dup}");
        }
        for ok in [
            r#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}"#,
            r#"{"n":1e-400,"m":123456789012345678901234567890}"#,
            r#"{}"#,
            "[]",
            "1",
            r#""s""#,
        ] {
            assert!(!has_duplicate_keys(ok), "{ok}");
        }
        let many: Vec<String> = (0..5000).map(|i| format!("\"k{i}\":0")).collect();
        assert!(!has_duplicate_keys(&format!("{{{}}}", many.join(","))));
    }

    #[test]
    fn one_pass_parse_gives_serde_json_value_and_the_same_duplicate_answer() {
        for text in [
            r#"{"_user_id":"a","_user_id":"b"}"#,
            r#"{"p":{"x":1,"x":2},"q":[1,2.5,-0,1e2,true,null,"s\u0000"]}"#,
            r#"[{"x":1},{"y":1,"y":2}]"#,
            r#"{"ab":1,"a\u0062":2}"#,
            r#"{"n":1e-400,"m":123456789012345678901234567890,"f":0.1000}"#,
            r#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}],"d":{},"e":[]}"#,
            "1",
            r#""s""#,
            "null",
        ] {
            let (value, repeated) = parse_noting_duplicate_keys(text).unwrap();
            assert_eq!(
                value,
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
            assert_eq!(
                value.to_string(),
                serde_json::from_str::<Value>(text).unwrap().to_string()
            );
            assert_eq!(repeated, has_duplicate_keys(text), "{text}");
        }
        for bad in ["{", r#"{"a":}"#, "[1,]", "1 2", ""] {
            assert!(parse_noting_duplicate_keys(bad).is_err(), "{bad}");
        }
    }
}
