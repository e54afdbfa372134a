//! The TOML file named by `--config`: each of its keys becomes the default
//! of its flag, so a flag or a variable still wins over it.

use super::ConfigError;

/// `--config` from the arguments, or `BUSYAPI_CONFIG`.
pub fn config_path(argv: &[String]) -> Option<String> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(p.to_owned());
        }
    }
    std::env::var("BUSYAPI_CONFIG").ok()
}

/// Makes every key of the TOML file the default of its flag.
pub fn apply_file(mut cmd: clap::Command, path: &str) -> Result<clap::Command, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    for (key, value) in table {
        let id = key.replace('-', "_");
        if id == "config" || !cmd.get_arguments().any(|a| a.get_id() == id.as_str()) {
            return Err(err(format!("unknown setting '{key}'")));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(err(format!(
                    "'{key}' must be a string, number or boolean, not {}",
                    other.type_str()
                )));
            }
        };
        cmd = cmd.mut_arg(id, |a| a.default_value(text));
    }
    Ok(cmd)
}
