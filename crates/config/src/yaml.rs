//! YAML to JSON values with a bound on the number of nodes.
//!
//! YAML aliases (`*name`) repeat an anchored subtree each time they are used, so a few
//! megabytes of text can describe billions of nodes (the "billion laughs" pattern): enough to
//! exhaust memory in the process that also proxies traffic, and `POST /config` accepts text
//! from the Admin API. Each node counts against a budget while it is built, and the parse
//! fails once the budget is spent, before the memory is.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Nodes allowed in one document: about 40 times a 10,000-route config's count.
pub const MAX_NODES: usize = 8_000_000;

/// Parses YAML text into a JSON value, failing past [`MAX_NODES`] nodes.
pub fn value(text: &str) -> Result<Value, serde_yaml::Error> {
    value_within(text, MAX_NODES)
}

fn value_within(text: &str, budget: usize) -> Result<Value, serde_yaml::Error> {
    let left = Cell::new(budget);
    Node(&left).deserialize(serde_yaml::Deserializer::from_str(text))
}

struct Node<'a>(&'a Cell<usize>);

impl Node<'_> {
    fn count<E: de::Error>(&self) -> Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(n) => {
                self.0.set(n);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the document has more than {MAX_NODES} values (aliases expanding too far?)"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Node(self.0))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    /// A tagged value (`!tag value`): the value, without its tag.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (_tag, variant) = data.variant::<String>()?;
        variant.newtype_variant_seed(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(Key)? {
            self.count()?;
            let v = map.next_value_seed(Node(self.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: a string, or a number or boolean written as text (OpenAPI's `200:`).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_yaml() {
        let text = "a: 1\nb: [x, 2.5, true, null]\nc: {d: -3}\n";
        let want: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(value(text).unwrap(), want);
        // Keys written as numbers (OpenAPI response codes) become strings.
        assert_eq!(value("200: ok\n").unwrap()["200"], "ok");
        assert_eq!(value("a: !custom 5\n").unwrap()["a"], 5);
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // Each level multiplies by 10: 10^7 leaves from a few hundred bytes.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = value_within(&text, 100_000).unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        // Aliases within the budget still work.
        let small = "base: &b {x: 1}\nuse: *b\n";
        assert_eq!(value(small).unwrap()["use"]["x"], 1);
    }
}
