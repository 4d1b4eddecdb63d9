//! Reading the merged TOML table into [`Config`]: `FILEPROXY_*` overrides, and a
//! deserialization that names every offending key in one run.

use super::{Config, ConfigError, ENV_PREFIX};

/// Most structural problems reported at once; a file with more is surely not a config.
const MAX_KEY_ERRORS: usize = 64;

/// Deserializes the merged table. On failure it keeps going: each offending key is
/// named, taken out and the rest tried again, so one run of `check-config` lists every
/// unknown or mistyped key, plus the value problems of the keys that did parse.
pub(super) fn deserialize_reporting_every_key(
    mut table: toml::Table,
) -> Result<Config, ConfigError> {
    let mut errors: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    loop {
        let attempt: Result<Config, _> =
            serde_path_to_error::deserialize(toml::Value::Table(table.clone()));
        let err = match attempt {
            Ok(cfg) if errors.is_empty() => return Ok(cfg),
            Ok(cfg) => {
                if let Err(ConfigError::Invalid(more)) = cfg.validate() {
                    errors.extend(
                        more.into_iter()
                            .filter(|m| !removed.iter().any(|k| m.starts_with(k.as_str()))),
                    );
                }
                return Err(ConfigError::Invalid(errors));
            }
            Err(e) => e,
        };
        let path = err.path().to_string();
        let msg = err.inner().message().trim().to_string();
        errors.push(if path.is_empty() || path == "." {
            format!("configuration: {msg}")
        } else {
            format!("configuration key {path}: {msg}")
        });
        match remove_offending_key(&mut table, &err) {
            Some(key) if errors.len() < MAX_KEY_ERRORS => removed.push(key),
            // No way to go on (or too many problems): report what was found.
            _ => {
                return Err(if errors.len() == 1 {
                    ConfigError::Parse(errors.remove(0))
                } else {
                    ConfigError::Invalid(errors)
                })
            }
        }
    }
}

/// Takes the key an error points at (the last table key on its path: the unknown or
/// mistyped key itself, or the array holding a bad element) out of the table and
/// returns its dotted name; `None` when the path names nothing in the table.
fn remove_offending_key(
    table: &mut toml::Table,
    err: &serde_path_to_error::Error<toml::de::Error>,
) -> Option<String> {
    let keys: Vec<&str> = err
        .path()
        .iter()
        .map_while(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let (last, parents) = keys.split_last()?;
    let mut cur = table;
    for key in parents {
        cur = match cur.get_mut(*key) {
            Some(toml::Value::Table(t)) => t,
            _ => return None,
        };
    }
    cur.remove(*last)?;
    Some(keys.join("."))
}

/// Applies `FILEPROXY_<SECTION>__<KEY>[__<SUBKEY>]` variables onto the parsed table.
///
/// A string-typed key takes the value as it is (`FILEPROXY_AUTH__SECRET=12345`, a
/// date-like value, or `"abc"` with its quotes); any other key's value is parsed as
/// TOML (so `true`, `42`, `["a","b"]`, `{ qq = 2 }` work), falling back to a plain string
/// (which then fails as a type error naming the key).
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let defaults = toml::Value::try_from(Config::default()).ok();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            // FILEPROXY_CONFIG and similar single-word variables are not key overrides.
            continue;
        }
        let string_typed = defaults
            .as_ref()
            .and_then(|d| parts.iter().try_fold(d, |v, p| v.get(p.as_str())))
            .is_some_and(toml::Value::is_str);
        let value = if string_typed {
            toml::Value::String(raw.clone())
        } else {
            parse_env_value(raw)
        };
        let mut cur = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = cur
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Parse(format!(
                        "{name}: {} is not a section",
                        parts.join(".")
                    )))
                }
            };
        }
        if let Some(last) = parts.last() {
            cur.insert(last.clone(), value);
        }
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
