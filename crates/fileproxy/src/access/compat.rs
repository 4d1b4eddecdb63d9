//! Lenient JSON field readers for entries the Python version wrote: numbers where we
//! write strings, floats where we write integer timestamps, `null` for absent values.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string field that may also be a number, a bool or `null` (→ empty).
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        other => value_to_string(&other),
    })
}

/// A timestamp or counter that may be an integer, a float, a numeric string or `null`.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(value_to_int(&Value::deserialize(d)?))
}

/// A list of strings that may be `null`, a single string, or hold non-strings.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .iter()
            .map(value_to_string)
            .filter(|s| !s.is_empty())
            .collect(),
        Value::String(s) if !s.is_empty() => vec![s],
        _ => Vec::new(),
    })
}

/// The string form of a JSON scalar (`null`, arrays and objects → empty).
pub fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The integer form of a JSON scalar (floats truncated; anything else → 0).
pub fn value_to_int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars() {
        assert_eq!(value_to_string(&json!("a")), "a");
        assert_eq!(value_to_string(&json!(12)), "12");
        assert_eq!(value_to_string(&json!(null)), "");
        assert_eq!(value_to_int(&json!(1700000000.75)), 1_700_000_000);
        assert_eq!(value_to_int(&json!("17")), 17);
        assert_eq!(value_to_int(&json!("1.5e3")), 1500);
        assert_eq!(value_to_int(&json!(u64::MAX)), i64::MAX);
        assert_eq!(value_to_int(&json!([1])), 0);
    }
}
