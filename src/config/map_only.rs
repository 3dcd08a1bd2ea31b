//! Structs read from TOML tables only. serde's derived visitor also takes an array of a
//! struct's fields in their order, which no config or mapping table is written as; its code,
//! once per struct in each of toml's and serde_path_to_error's generic deserializers, weighed
//! about 120 kB in the aarch64 binary, 20 kB of it for the mapping table's three structs
//! (scripts/verify-arm.sh's size budget, docs/building.md "Sizes").
//! A struct derives with `#[serde(remote = "Self")]`, which makes the derive an inherent
//! `deserialize` (and `serialize`), and [`from_tables_only`] gives it the traits through
//! [`MapOnly`]: an array is then "invalid type: sequence, expected struct ...".

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::Deserializer;

/// `from_tables_only!(A, B)`: `Deserialize` for each struct (derived with `remote = "Self"`),
/// from a table only; `from_tables_only!(written: A, B)` gives them `Serialize` too, as
/// derived (the struct must keep `#[derive(Serialize)]`: without it the forwarding method
/// would call itself, which the `deny` below makes a compile error).
/// Read such a struct through the trait (`toml::from_str`, `<T as Deserialize>::deserialize`),
/// never through the derive's inherent `T::deserialize(d)`: that one takes arrays again.
macro_rules! from_tables_only {
    (written: $($t:ty),* $(,)?) => {
        $crate::config::map_only::from_tables_only!($($t),*);
        $(
            impl serde::Serialize for $t {
                #[deny(unconditional_recursion)]
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    <$t>::serialize(self, s)
                }
            }
        )*
    };
    ($($t:ty),* $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$t>::deserialize($crate::config::map_only::MapOnly(d))
            }
        }
    )*};
}
pub(crate) use from_tables_only;

/// A deserializer that hands its visitor only maps: any other value is the visitor's invalid
/// type, so the derived `visit_seq` is never compiled for it.
pub(crate) struct MapOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(MapVisitor(v))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(name, fields, MapVisitor(v))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// [`MapOnly`]'s visitor: the wrapped one's `visit_map`, every other value invalid.
struct MapVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for MapVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
}
