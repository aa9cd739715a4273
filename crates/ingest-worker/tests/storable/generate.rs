//! What the storable property generates: an item's JSON text, as a tree that renders to
//! it, and the strategies that draw it, biased towards valid items with the awkward
//! categories at a steady rate.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The awkward categories, as `STORABLE_ONLY` names them.
pub const NUL: &str = "nul";
pub const NUMBERS: &str = "numbers";
pub const YEARS: &str = "years";
pub const LEAP: &str = "leap";
pub const DUP: &str = "dup";

/// The largest UTC offset PostgreSQL's own date parser takes (RFC 3339 allows ±23:59).
const PG_MAX_OFFSET: i16 = 15 * 60 + 59;
const MAX_OFFSET: i16 = 23 * 60 + 59;

/// Whether the awkward `category` is generated: all are, unless `STORABLE_ONLY` lists some.
pub fn enabled(category: &str) -> bool {
    static ONLY: LazyLock<Option<String>> = LazyLock::new(|| std::env::var("STORABLE_ONLY").ok());
    ONLY.as_deref()
        .is_none_or(|only| only.split(',').any(|c| c.trim() == category))
}

/// A JSON value as written. An object is a list of pairs, so that a key can repeat.
#[derive(Clone, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text; `inexact` when drawn as one an `f64` cannot hold.
    Num {
        text: String,
        inexact: bool,
    },
    Str(Vec<Piece>),
    Date(Date),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// A run of a JSON string: raw (escaping only what JSON requires), or all `\uXXXX`
/// escapes (surrogate pairs beyond the BMP).
#[derive(Clone, Debug)]
pub enum Piece {
    Raw(String),
    Escaped(String),
}

/// An RFC 3339 date-time, by its components.
#[derive(Clone, Debug)]
pub struct Date {
    ymd: (u16, u8, u8),
    hms: (u8, u8, u8),
    /// The fractional second's digits, as written.
    fraction: String,
    /// Minutes east of UTC; `None` is `Z`.
    offset: Option<i16>,
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num { text, .. } => f.write_str(text),
            Json::Date(date) => write!(f, "\"{date}\""),
            Json::Str(pieces) => {
                f.write_str("\"")?;
                pieces.iter().try_for_each(|piece| write!(f, "{piece}"))?;
                f.write_str("\"")
            }
            Json::Array(values) => {
                let values: Vec<_> = values.iter().map(Json::to_string).collect();
                write!(f, "[{}]", values.join(","))
            }
            Json::Object(fields) => {
                let fields: Vec<_> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                write!(f, "{{{}}}", fields.join(","))
            }
        }
    }
}

impl fmt::Display for Piece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Raw(text) => text.chars().try_for_each(|c| match c {
                '"' | '\\' => write!(f, "\\{c}"),
                '\n' => f.write_str("\\n"),
                '\t' => f.write_str("\\t"),
                c if c < ' ' => write!(f, "\\u{:04x}", u32::from(c)),
                c => write!(f, "{c}"),
            }),
            Piece::Escaped(text) => text
                .encode_utf16()
                .try_for_each(|unit| write!(f, "\\u{unit:04X}")),
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ((y, mo, d), (h, mi, s)) = (self.ymd, self.hms);
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")?;
        if !self.fraction.is_empty() {
            write!(f, ".{}", self.fraction)?;
        }
        match self.offset {
            None => f.write_str("Z"),
            Some(m) => {
                let sign = if m < 0 { '-' } else { '+' };
                let m = m.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
            }
        }
    }
}

impl Date {
    /// Whether the instant is before 0001-01-01T00:00:00Z.
    fn before_year_one(&self) -> bool {
        let (h, m, _) = self.hms;
        let utc_minutes = i16::from(h) * 60 + i16::from(m) - self.offset.unwrap_or(0);
        match self.ymd {
            (0, 12, 31) => utc_minutes < 24 * 60,
            (0, ..) => true,
            (1, 1, 1) => utc_minutes < 0,
            _ => false,
        }
    }

    /// What SQL computes the expected instant from: year (ISO year 0 is PostgreSQL's
    /// 1 BC, `-1`), month, day, hour, minute, offset in minutes, and the seconds in
    /// microseconds, the fraction truncated.
    pub fn sql_parts(&self) -> Vec<i64> {
        let ((y, mo, d), (h, mi, s)) = (self.ymd, self.hms);
        let micros: i64 = format!("{:0<6.6}", self.fraction).parse().expect("digits");
        let year = if y == 0 { -1 } else { i64::from(y) };
        let offset = i64::from(self.offset.unwrap_or(0));
        let seconds = i64::from(s) * 1_000_000 + micros;
        vec![
            year,
            mo.into(),
            d.into(),
            h.into(),
            mi.into(),
            offset,
            seconds,
        ]
    }
}

impl Json {
    fn visit(&self, f: &mut impl FnMut(&Json)) {
        f(self);
        match self {
            Json::Array(values) => values.iter().for_each(|v| v.visit(f)),
            Json::Object(fields) => fields.iter().for_each(|(_, v)| v.visit(f)),
            _ => {}
        }
    }

    /// The item's (last) `_event_date`, when it is a date.
    pub fn event_date(&self) -> Option<&Date> {
        let Json::Object(fields) = self else {
            return None;
        };
        match fields.iter().rev().find(|(k, _)| k == "_event_date") {
            Some((_, Json::Date(date))) => Some(date),
            _ => None,
        }
    }

    /// The awkward categories in the item, and storable edge cases worth counting.
    pub fn traits(&self) -> HashSet<&'static str> {
        let mut found = HashSet::new();
        self.visit(&mut |json| match json {
            Json::Str(pieces) => {
                let nul = |(Piece::Raw(text) | Piece::Escaped(text)): &Piece| text.contains('\0');
                found.extend(pieces.iter().any(nul).then_some(NUL));
            }
            Json::Num { inexact, .. } => found.extend(inexact.then_some(NUMBERS)),
            Json::Date(date) => found.extend(
                [
                    date.before_year_one().then_some(YEARS),
                    (date.hms.2 == 60).then_some(LEAP),
                    (date.fraction.len() > 6).then_some("fraction beyond µs"),
                    (date.offset.unwrap_or(0).abs() > PG_MAX_OFFSET)
                        .then_some("offset beyond ±15:59"),
                ]
                .into_iter()
                .flatten(),
            ),
            Json::Object(fields) => {
                let mut keys = HashSet::new();
                found.extend((!fields.iter().all(|(k, _)| keys.insert(k))).then_some(DUP));
            }
            _ => {}
        });
        found
    }
}

// Strategies. Plain alternatives come first, so that shrinking moves towards them.

/// `plain`, or in `percent`% of the draws `awkward` when its category is generated.
fn sometimes<T: fmt::Debug + 'static>(
    category: &str,
    percent: u32,
    plain: impl Strategy<Value = T> + 'static,
    awkward: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if enabled(category) {
        prop_oneof![100 - percent => plain, percent => awkward].boxed()
    } else {
        plain.boxed()
    }
}

/// A piece of a string; control characters (`U+0000` among them) only with `controls`.
fn piece(controls: bool) -> BoxedStrategy<Piece> {
    let tricky: &'static [&'static str] = if controls {
        &[
            "\"", "\\", ",", "'", "NULL", "\\N", "\\.", "\n\\.\n", "\r\n", "\t", "\u{1}", "😀",
        ]
    } else {
        &[
            "\"", "\\", ",", "'", "NULL", "\\N", "\\.", " ", "😀", "\u{2028}",
        ]
    };
    let chars = move || {
        prop::collection::vec(any::<char>(), 1..3).prop_filter_map("storable", move |cs| {
            let ok = cs
                .iter()
                .all(|&c| c != '\0' && (controls || !c.is_control()));
            ok.then(|| cs.into_iter().collect::<String>())
        })
    };
    let plain = prop_oneof![
        12 => "[A-Za-z0-9 _.-]{1,8}".prop_map(Piece::Raw),
        3 => select(tricky).prop_map(|s| Piece::Raw(s.into())),
        3 => chars().prop_map(Piece::Raw),
        2 => chars().prop_map(Piece::Escaped),
    ];
    if !controls {
        return plain.boxed();
    }
    let nul = select(&["\0", "a\0b"][..]);
    let nul = prop_oneof![
        nul.clone().prop_map(|s| Piece::Escaped(s.into())),
        nul.prop_map(|s| Piece::Raw(s.into())),
    ];
    sometimes(NUL, 2, plain, nul)
}

fn string(controls: bool, pieces: std::ops::Range<usize>) -> BoxedStrategy<Json> {
    let pieces = prop::collection::vec(piece(controls), pieces);
    pieces.prop_map(Json::Str).boxed()
}

fn number() -> BoxedStrategy<Json> {
    let exact = prop_oneof![
        4 => "0|-?[1-9][0-9]{0,8}",
        3 => "-?(0|[1-9][0-9]{0,5})\\.[0-9]{1,6}",
        2 => "-?[1-9](\\.[0-9]{1,4})?[eE][+-]?[0-9]{1,2}",
        1 => "-0|0\\.0|9007199254740993|-9223372036854775808|18446744073709551615|1e22|5e-324",
    ];
    let inexact = prop_oneof![
        "123456789012345678901234567890|18446744073709551616|-9223372036854775809|1e-400",
        "0\\.12345678901234567890123|2\\.5e-324|1e400",
        "-?[1-9][0-9]{20,39}",
        "-?0\\.[0-9]{16,30}[1-9]",
        "-?[1-9]e-(3[3-9][0-9]|4[0-9][0-9])",
    ];
    let num = |inexact| move |text| Json::Num { text, inexact };
    let (exact, inexact) = (exact.prop_map(num(false)), inexact.prop_map(num(true)));
    sometimes(NUMBERS, 10, exact, inexact)
}

/// Custom attributes or event parameters: distinct names, values scalars or arrays.
fn custom_fields(max: usize) -> BoxedStrategy<Vec<(String, Json)>> {
    let scalar = prop_oneof![
        1 => Just(Json::Null),
        2 => any::<bool>().prop_map(Json::Bool),
        4 => number(),
        4 => string(true, 0..5),
    ];
    let array = prop::collection::vec(scalar.clone(), 0..5).prop_map(Json::Array);
    let name = prop_oneof![10 => "[a-z][a-z0-9_]{0,10}", 1 => "[a-z][a-z0-9_]{63}"];
    prop::collection::btree_map(name, prop_oneof![4 => scalar, 1 => array], 0..max)
        .prop_map(|fields| fields.into_iter().collect())
        .boxed()
}

fn date() -> BoxedStrategy<Date> {
    let usual = prop_oneof![
        8 => (1970u16..=2026, 1u8..=12, 1u8..=28),
        2 => (1u16..=2026, 1u8..=12, 1u8..=31),
        1 => (2027u16..=9999, 1u8..=12, 1u8..=28),
    ];
    // Year 0 (before year 1 in UTC unless a negative offset on Dec 31 carries it into
    // year 1), or 0001-01-01 (before year 1 with a positive offset early in the day).
    let year_zero = select(&[(1u8, 1u8), (2, 29), (12, 31)][..]).prop_map(|(m, d)| (0u16, m, d));
    let first_days = prop_oneof![3 => year_zero, 1 => Just((1u16, 1u8, 1u8))];
    let leap = prop_oneof![Just((23u8, 59u8)), (0u8..24, 0u8..60)].prop_map(|(h, m)| (h, m, 60));
    let offset = prop_oneof![
        3 => Just(None),
        4 => (-PG_MAX_OFFSET..=PG_MAX_OFFSET).prop_map(Some),
        1 => select(&[-MAX_OFFSET, MAX_OFFSET][..]).prop_map(Some),
        1 => (-MAX_OFFSET..=MAX_OFFSET).prop_map(Some),
    ];
    let parts = (
        sometimes(YEARS, 20, usual, first_days),
        sometimes(LEAP, 10, (0u8..24, 0u8..60, 0u8..60), leap),
        prop_oneof![3 => Just(String::new()), 4 => "[0-9]{1,6}", 2 => "[0-9]{7,9}"],
        offset,
    );
    let date = |(ymd, hms, fraction, offset)| Date {
        ymd,
        hms,
        fraction,
        offset,
    };
    parts.prop_map(date).boxed()
}

/// Absent, `null`, or a value from `present`.
fn optional(present: BoxedStrategy<Json>) -> impl Strategy<Value = Option<Json>> {
    prop_oneof![3 => Just(None), 1 => Just(Some(Json::Null)), 5 => present.prop_map(Some)]
}

/// An object of `fields`; in some draws one of its keys is repeated, with the value
/// another draw has for it (or the same value when that draw lacks the key).
fn object(fields: BoxedStrategy<Vec<(String, Json)>>) -> BoxedStrategy<Json> {
    let donor = (any::<Index>(), fields.clone()).prop_map(Some);
    let dup = sometimes(DUP, 8, Just(None), donor);
    (fields, dup)
        .prop_map(|(mut fields, dup)| {
            if let Some((index, donor)) = dup.filter(|_| !fields.is_empty()) {
                let (key, value) = fields[index.index(fields.len())].clone();
                let donated = donor.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v);
                fields.push((key, donated.unwrap_or(value)));
            }
            Json::Object(fields)
        })
        .boxed()
}

/// An item's fields: the required ones, the optional ones present, then `custom`.
fn fields<const N: usize, const M: usize>(
    required: [(&str, Json); N],
    optional: [(&str, Option<Json>); M],
    custom: Vec<(String, Json)>,
) -> Vec<(String, Json)> {
    let optional = optional.into_iter().filter_map(|(k, v)| Some(k).zip(v));
    let named = required.into_iter().chain(optional);
    named
        .map(|(k, v)| (k.to_owned(), v))
        .chain(custom)
        .collect()
}

/// A contact item (`POST /stream/contacts`).
pub fn contact() -> BoxedStrategy<Json> {
    let email = "[a-z0-9]{1,8}(\\+[a-z]{1,4})?@[a-z]{1,10}\\.(com|co|io)";
    let phone = "\\+[1-9][0-9]{1,14}";
    let [email, phone] = [email, phone].map(|re| re.prop_map(|s| Json::Str(vec![Piece::Raw(s)])));
    let reserved = (
        optional(email.boxed()),
        optional(phone.boxed()),
        optional(string(true, 0..6)),
        optional(string(true, 0..6)),
    );
    let parts = (string(false, 1..4), reserved, custom_fields(7));
    let item = |(user, (email, phone, first, last), custom)| {
        let optional = [
            ("_email", email),
            ("_phone_mobile", phone),
            ("_first_name", first),
            ("_last_name", last),
        ];
        fields([("_user_id", user)], optional, custom)
    };
    object(parts.prop_map(item).boxed())
}

/// An event item (`POST /stream/events`).
pub fn event() -> BoxedStrategy<Json> {
    let ids = (string(false, 1..4), string(false, 1..4), string(true, 1..5));
    let date = optional(date().prop_map(Json::Date).boxed());
    let parameters = optional(object(custom_fields(6)));
    let item = |((user, id, event_type), date, parameters)| {
        let required = [
            ("_user_id", user),
            ("_event_id", id),
            ("_event_type", event_type),
        ];
        fields(
            required,
            [("_event_date", date), ("_event_parameters", parameters)],
            vec![],
        )
    };
    object((ids, date, parameters).prop_map(item).boxed())
}
