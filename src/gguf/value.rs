//! GGUF metadata values and the ordered metadata map.

use std::collections::HashMap;
use std::fmt;

/// The GGUF metadata value type ids (`gguf_type` in ggml).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgufValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufValueType {
    /// The type with GGUF id `id`, if it exists.
    pub fn from_id(id: u32) -> Option<GgufValueType> {
        use GgufValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The GGUF numeric id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Upper-case name as gguf-py spells it (`UINT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        use GgufValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }

    /// The smallest number of bytes one value of this type occupies in a file (string: its
    /// length prefix; array: element type + count).
    pub fn min_encoded_size(self) -> u64 {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed GGUF array. Every element has the same type; arrays may nest.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl GgufArray {
    /// The element type.
    pub fn elem_type(&self) -> GgufValueType {
        match self {
            GgufArray::U8(_) => GgufValueType::U8,
            GgufArray::I8(_) => GgufValueType::I8,
            GgufArray::U16(_) => GgufValueType::U16,
            GgufArray::I16(_) => GgufValueType::I16,
            GgufArray::U32(_) => GgufValueType::U32,
            GgufArray::I32(_) => GgufValueType::I32,
            GgufArray::F32(_) => GgufValueType::F32,
            GgufArray::Bool(_) => GgufValueType::Bool,
            GgufArray::String(_) => GgufValueType::String,
            GgufArray::Array(_) => GgufValueType::Array,
            GgufArray::U64(_) => GgufValueType::U64,
            GgufArray::I64(_) => GgufValueType::I64,
            GgufArray::F64(_) => GgufValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

macro_rules! strict_getter {
    ($name:ident, $variant:ident, $t:ty) => {
        #[doc = concat!("The value if it is exactly a `", stringify!($variant), "`.")]
        pub fn $name(&self) -> Option<$t> {
            match self {
                GgufValue::$variant(v) => Some(*v),
                _ => None,
            }
        }
    };
}

macro_rules! array_getter {
    ($name:ident, $variant:ident, $t:ty) => {
        #[doc = concat!("The elements if this is an array of `", stringify!($variant), "`.")]
        pub fn $name(&self) -> Option<&[$t]> {
            match self {
                GgufValue::Array(GgufArray::$variant(v)) => Some(v),
                _ => None,
            }
        }
    };
}

impl GgufValue {
    /// The value's type.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(_) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// A short type description for messages: `UINT32`, `ARRAY[STRING]`.
    pub fn type_description(&self) -> String {
        match self {
            GgufValue::Array(a) => format!("ARRAY[{}]", a.elem_type()),
            v => v.value_type().name().to_string(),
        }
    }

    strict_getter!(as_u8, U8, u8);
    strict_getter!(as_i8, I8, i8);
    strict_getter!(as_u16, U16, u16);
    strict_getter!(as_i16, I16, i16);
    strict_getter!(as_u32, U32, u32);
    strict_getter!(as_i32, I32, i32);
    strict_getter!(as_f32, F32, f32);
    strict_getter!(as_bool, Bool, bool);
    strict_getter!(as_u64, U64, u64);
    strict_getter!(as_i64, I64, i64);
    strict_getter!(as_f64, F64, f64);

    /// The string if this is a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array if this is an `Array`.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    array_getter!(as_u8_array, U8, u8);
    array_getter!(as_i8_array, I8, i8);
    array_getter!(as_u16_array, U16, u16);
    array_getter!(as_i16_array, I16, i16);
    array_getter!(as_u32_array, U32, u32);
    array_getter!(as_i32_array, I32, i32);
    array_getter!(as_f32_array, F32, f32);
    array_getter!(as_bool_array, Bool, bool);
    array_getter!(as_string_array, String, String);
    array_getter!(as_u64_array, U64, u64);
    array_getter!(as_i64_array, I64, i64);
    array_getter!(as_f64_array, F64, f64);

    /// Any integer value converted losslessly to `u64` (negative values give `None`).
    pub fn to_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value converted losslessly to `i64`.
    pub fn to_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// A float value (`F32` or `F64`) as `f64`.
    pub fn to_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($t:ty, $variant:ident) => {
        impl From<$t> for GgufValue {
            fn from(v: $t) -> Self {
                GgufValue::$variant(v)
            }
        }
        impl From<Vec<$t>> for GgufValue {
            fn from(v: Vec<$t>) -> Self {
                GgufValue::Array(GgufArray::$variant(v))
            }
        }
        impl From<Vec<$t>> for GgufArray {
            fn from(v: Vec<$t>) -> Self {
                GgufArray::$variant(v)
            }
        }
    };
}

from_scalar!(u8, U8);
from_scalar!(i8, I8);
from_scalar!(u16, U16);
from_scalar!(i16, I16);
from_scalar!(u32, U32);
from_scalar!(i32, I32);
from_scalar!(f32, F32);
from_scalar!(bool, Bool);
from_scalar!(String, String);
from_scalar!(u64, U64);
from_scalar!(i64, I64);
from_scalar!(f64, F64);

impl From<&str> for GgufValue {
    fn from(v: &str) -> Self {
        GgufValue::String(v.to_string())
    }
}

impl From<Vec<&str>> for GgufValue {
    fn from(v: Vec<&str>) -> Self {
        GgufValue::Array(GgufArray::String(
            v.into_iter().map(str::to_string).collect(),
        ))
    }
}

impl From<GgufArray> for GgufValue {
    fn from(v: GgufArray) -> Self {
        GgufValue::Array(v)
    }
}

/// GGUF metadata: key/value pairs in insertion order (the order they are written and were
/// read), with lookup by key.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    entries: Vec<(String, GgufValue)>,
    index: HashMap<String, usize>,
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Set `key` to `value`. A new key goes to the end; an existing key keeps its position and
    /// the old value is returned.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<GgufValue>,
    ) -> Option<GgufValue> {
        let key = key.into();
        let value = value.into();
        if let Some(&i) = self.index.get(&key) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        None
    }

    /// Remove `key`, keeping the order of the rest.
    pub fn remove(&mut self, key: &str) -> Option<GgufValue> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(v)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &GgufValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
}

impl<K: Into<String>, V: Into<GgufValue>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keeps_order_and_replaces_in_place() {
        let mut m = Metadata::new();
        m.insert("b", 1u32);
        m.insert("a", "x");
        m.insert("c", vec![1.5f32]);
        assert_eq!(m.insert("a", 7i64), Some(GgufValue::from("x")));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(m.get("a").and_then(GgufValue::as_i64), Some(7));
        assert_eq!(m.remove("b"), Some(GgufValue::U32(1)));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(
            m.get("c").and_then(GgufValue::as_f32_array),
            Some(&[1.5f32][..])
        );
        assert!(m.get("b").is_none());
    }

    #[test]
    fn getters_are_strict_and_conversions_lossless() {
        let v = GgufValue::U32(5);
        assert_eq!(v.as_u32(), Some(5));
        assert_eq!(v.as_u64(), None);
        assert_eq!(v.to_u64(), Some(5));
        assert_eq!(GgufValue::I32(-1).to_u64(), None);
        assert_eq!(GgufValue::U64(u64::MAX).to_i64(), None);
        assert_eq!(
            GgufValue::from(vec!["a", "b"]).type_description(),
            "ARRAY[STRING]"
        );
        for id in 0..13 {
            assert_eq!(GgufValueType::from_id(id).map(GgufValueType::id), Some(id));
        }
        assert_eq!(GgufValueType::from_id(13), None);
    }
}
