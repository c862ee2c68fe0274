//! Reads the configuration layers from the outside world (file, environment, flags) into
//! protocol settings. Interpretation (typing, validation, precedence) is `bunker_protocol::config`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use bunker_protocol::config::{self, ConfigError, Key, Setting, Source};

/// A config file larger than this is refused unread (a real one is a few KiB); reading
/// `--config /dev/zero` whole would exhaust memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Settings from a TOML config file: top-level canonical keys, `[compat] shelvery = true`.
pub fn file_settings(path: &Path) -> Result<Vec<Setting>> {
    let bytes = crate::files::read_capped(path, MAX_CONFIG_BYTES).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => anyhow::anyhow!(
            "config file {}: larger than {} KiB, so not a bunker config (pass the right file to --config)",
            path.display(),
            MAX_CONFIG_BYTES >> 10
        ),
        _ => anyhow::anyhow!("config file {}: cannot read it ({e}); pass an existing file to --config", path.display()),
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("config file {}: not UTF-8 text ({e})", path.display()))?;
    parse_file(&text, &path.display().to_string())
}

/// Parses config-file text (`origin` names it in errors).
pub fn parse_file(text: &str, origin: &str) -> Result<Vec<Setting>> {
    let table: toml::Table = toml::from_str(text).with_context(|| format!("config file {origin}: not valid TOML"))?;
    let source = || Source::File { path: origin.to_string() };
    let mut out = Vec::new();
    let mut flat = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(inner) => flat.extend(inner.into_iter().map(|(k2, v2)| (format!("{k}.{k2}"), v2))),
            v => flat.push((k, v)),
        }
    }
    for (name, value) in flat {
        let key = Key::from_name(&name).ok_or_else(|| ConfigError::UnknownKey {
            key: name.clone(),
            origin: source(),
            hint: Key::suggest(&name),
        })?;
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) if !s.contains(',') => parts.push(s),
                        other => bail!(ConfigError::InvalidValue {
                            key: key.name(),
                            value: other.to_string(),
                            origin: source(),
                            accepted: key.accepted(),
                        }),
                    }
                }
                parts.join(",")
            }
            other => bail!(ConfigError::InvalidValue {
                key: key.name(),
                value: other.to_string(),
                origin: source(),
                accepted: key.accepted()
            }),
        };
        out.push(Setting { key, value, source: source() });
    }
    Ok(out)
}

/// Flags that set configuration keys.
pub struct FlagSettings<'a> {
    /// `--region` (repeatable).
    pub regions: &'a [String],
    /// `--select`.
    pub select: Option<&'a str>,
    /// `--retention`.
    pub retention: Option<&'a str>,
}

/// All run-level layers, lowest first: defaults < file < environment < flags.
/// Returns the settings and warnings (unknown `BUNKER_*` variables).
pub fn layers(config_file: Option<&Path>, flags: &FlagSettings<'_>) -> Result<(Vec<Setting>, Vec<String>)> {
    let mut layers = config::defaults();
    if let Some(path) = config_file {
        layers.extend(file_settings(path)?);
    }
    let (env, warnings) = config::env_settings(std::env::vars());
    layers.extend(env);
    let flag = |key: Key, flag: &str, value: String| Setting { key, value, source: Source::Cli { flag: flag.into() } };
    if !flags.regions.is_empty() {
        layers.push(flag(Key::Regions, "--region", flags.regions.join(",")));
    }
    if let Some(s) = flags.select {
        layers.push(flag(Key::Select, "--select", s.to_string()));
    }
    if let Some(r) = flags.retention {
        layers.push(flag(Key::Retention, "--retention", r.to_string()));
    }
    Ok((layers, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_tables_and_errors() {
        let s = parse_file(
            "keep_daily = 30\nregions = [\"us-east-1\", \"eu-west-1\"]\n[compat]\nshelvery = true\n",
            "b.toml",
        )
        .unwrap();
        let get = |k: Key| s.iter().find(|x| x.key == k).unwrap().value.clone();
        assert_eq!(get(Key::KeepDaily), "30");
        assert_eq!(get(Key::Regions), "us-east-1,eu-west-1");
        assert_eq!(get(Key::CompatShelvery), "true");
        let e = parse_file("keep_dayly = 3", "b.toml").unwrap_err().to_string();
        assert!(e.contains("keep_dayly") && e.contains("keep_daily") && e.contains("b.toml"), "{e}");
        let e = parse_file("keep_daily = 1.5", "b.toml").unwrap_err().to_string();
        assert!(e.contains("1.5") && e.contains("keep_daily"), "{e}");
    }
}
