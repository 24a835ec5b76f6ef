//! proto3 canonical JSON helpers: bytes as base64, 64-bit integers as strings,
//! numbers accepted either as JSON numbers or strings.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serializer};

/// `bytes` fields: standard base64 (padding accepted or not, URL-safe accepted on input).
pub mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        decode(&text).map(Bytes::from).map_err(de::Error::custom)
    }

    pub(crate) fn decode(text: &str) -> Result<Vec<u8>, String> {
        let trimmed = text.trim_end_matches('=');
        let normalized: String = trimmed
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '/',
                other => other,
            })
            .collect();
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(normalized.as_bytes())
            .map_err(|e| format!("invalid base64 in bytes field: {e}"))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
}

fn parse_i64<E: de::Error>(v: NumOrString) -> Result<i64, E> {
    match v {
        NumOrString::Int(i) => Ok(i),
        NumOrString::Uint(u) => i64::try_from(u).map_err(|_| E::custom("integer out of range")),
        NumOrString::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        NumOrString::Float(_) => Err(E::custom("expected an integer")),
        NumOrString::Text(t) => t
            .trim()
            .parse::<i64>()
            .map_err(|_| E::custom(format!("expected an integer, got {t:?}"))),
    }
}

/// `int64` fields: written as a string, read from a number or a string.
pub mod i64_str {
    use super::*;

    pub fn serialize<S: Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(0),
            Some(v) => parse_i64(v),
        }
    }
}

/// 32-bit integer fields: written as a number, read from a number or a string.
pub mod u32_num {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(0),
            Some(v) => u32::try_from(parse_i64::<D::Error>(v)?)
                .map_err(|_| de::Error::custom("uint32 out of range")),
        }
    }
}

/// `sint32`/`int32` fields: written as a number, read from a number or a string.
pub mod i32_num {
    use super::*;

    pub fn serialize<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(0),
            Some(v) => i32::try_from(parse_i64::<D::Error>(v)?)
                .map_err(|_| de::Error::custom("int32 out of range")),
        }
    }
}

/// Fields that may be `null` on the wire: null reads as the default value.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Declares a proto enum: serialized by name, read from its name or its number.
macro_rules! proto_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal / $num:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            #[default]
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }
            pub fn number(self) -> i32 {
                match self { $(Self::$variant => $num),+ }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                #[serde(untagged)]
                enum Raw { Num(i64), Name(String) }
                match Option::<Raw>::deserialize(d)? {
                    None => Ok(Self::default()),
                    Some(Raw::Num(n)) => match n {
                        $($num => Ok(Self::$variant),)+
                        other => Err(serde::de::Error::custom(format!(
                            "unknown {} value {other}", stringify!($name)))),
                    },
                    Some(Raw::Name(text)) => match text.as_str() {
                        $($wire => Ok(Self::$variant),)+
                        other => Err(serde::de::Error::custom(format!(
                            "unknown {} value {other:?}", stringify!($name)))),
                    },
                }
            }
        }
    };
}
pub(crate) use proto_enum;
