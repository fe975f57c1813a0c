//! Where the API URL and key come from: flags, then environment, then the TOML
//! config file (`~/.config/absa/cli.toml`), then the built-in default URL.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
pub const ENV_API_URL: &str = "ABSA_API_URL";
pub const ENV_API_KEY: &str = "ABSA_API_KEY";
pub const ENV_CONFIG: &str = "ABSA_CLI_CONFIG";

/// What one source says; `None` leaves the choice to the next source.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
}

/// The settings the client runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub api_url: String,
    pub api_key: Option<String>,
    /// The config file that was read, if any (for messages).
    pub config_file: Option<PathBuf>,
}

/// Resolves the settings. `flags` are the command-line values, `env` looks up an
/// environment variable (empty values count as unset), `config_flag` is `--config`.
pub fn load(flags: Layer, config_flag: Option<PathBuf>, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let from_env = Layer { api_url: env(ENV_API_URL), api_key: env(ENV_API_KEY) };
    let (path, explicit) = match config_flag.or_else(|| env(ENV_CONFIG).map(PathBuf::from)) {
        Some(p) => (Some(p), true),
        None => (default_config_path(&env), false),
    };
    let (file, config_file) = match path {
        Some(p) => match read_file(&p, explicit)? {
            Some(layer) => (layer, Some(p)),
            None => (Layer::default(), None),
        },
        None => (Layer::default(), None),
    };
    let merged = merge(&[flags, from_env, file]);
    let api_url = normalize_url(merged.api_url.as_deref().unwrap_or(DEFAULT_API_URL))?;
    Ok(Settings { api_url, api_key: merged.api_key, config_file })
}

/// The first source that sets a value wins.
pub fn merge(layers: &[Layer]) -> Layer {
    let pick = |f: fn(&Layer) -> &Option<String>| layers.iter().find_map(|l| f(l).as_ref().filter(|v| !v.trim().is_empty()).cloned());
    Layer { api_url: pick(|l| &l.api_url), api_key: pick(|l| &l.api_key) }
}

/// `$XDG_CONFIG_HOME/absa/cli.toml`, else `$HOME/.config/absa/cli.toml`.
pub fn default_config_path(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("absa").join("cli.toml"))
}

/// Reads a config file. A missing file is an error only when it was named explicitly.
pub fn read_file(path: &Path, explicit: bool) -> Result<Option<Layer>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).with_context(|| format!("config file {}", path.display())).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
    }
}

pub fn parse(text: &str) -> Result<Layer> {
    Ok(toml::from_str(text)?)
}

/// Checks the scheme and drops trailing slashes, so paths can be appended.
pub fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("API URL {url:?} must start with http:// or https://");
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("absa-cli-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cli.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn flags(url: Option<&str>, key: Option<&str>) -> Layer {
        Layer { api_url: url.map(str::to_owned), api_key: key.map(str::to_owned) }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_default() {
        let file = temp_file("precedence", "api_url = \"http://file:1\"\napi_key = \"file-key\"\n");
        let file_s = file.to_str().unwrap();
        let all_env = env_of(&[(ENV_API_URL, "http://env:2"), (ENV_API_KEY, "env-key"), (ENV_CONFIG, file_s)]);

        let s = load(flags(Some("http://flag:3"), Some("flag-key")), None, &all_env).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://flag:3", Some("flag-key")));

        let s = load(Layer::default(), None, &all_env).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://env:2", Some("env-key")));
        assert_eq!(s.config_file.as_deref(), Some(file.as_path()));

        let only_file = env_of(&[(ENV_CONFIG, file_s)]);
        let s = load(Layer::default(), None, &only_file).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://file:1", Some("file-key")));

        // Mixed: the URL from a flag, the key from the file.
        let s = load(flags(Some("http://flag:3/"), None), None, &only_file).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://flag:3", Some("file-key")));

        let s = load(Layer::default(), None, env_of(&[("HOME", "/nonexistent-home")])).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key), (DEFAULT_API_URL, None));
        assert_eq!(s.config_file, None);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = load(flags(Some(""), None), None, env_of(&[(ENV_API_URL, "  "), (ENV_API_KEY, ""), ("HOME", "/nonexistent")])).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key), (DEFAULT_API_URL, None));
    }

    #[test]
    fn config_flag_beats_config_env_and_default_path_is_under_home() {
        let a = temp_file("flag-a", "api_key = \"a\"\n");
        let b = temp_file("flag-b", "api_key = \"b\"\n");
        let env = env_of(&[(ENV_CONFIG, b.to_str().unwrap())]);
        let s = load(Layer::default(), Some(a.clone()), &env).unwrap();
        assert_eq!(s.api_key.as_deref(), Some("a"));

        let home = env_of(&[("HOME", "/home/u")]);
        assert_eq!(default_config_path(&home), Some(PathBuf::from("/home/u/.config/absa/cli.toml")));
        let xdg = env_of(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")]);
        assert_eq!(default_config_path(&xdg), Some(PathBuf::from("/x/absa/cli.toml")));
    }

    #[test]
    fn missing_file_is_an_error_only_when_named() {
        let missing = std::env::temp_dir().join("absa-cli-test-does-not-exist.toml");
        assert!(load(Layer::default(), Some(missing.clone()), env_of(&[])).is_err());
        let home = env_of(&[("HOME", "/nonexistent-home")]);
        assert!(load(Layer::default(), None, home).is_ok());
    }

    #[test]
    fn bad_files_and_urls_are_reported() {
        let typo = temp_file("typo", "api_ur = \"http://x\"\n");
        let err = load(Layer::default(), Some(typo.clone()), env_of(&[])).unwrap_err();
        assert!(format!("{err:#}").contains(typo.to_str().unwrap()), "{err:#}");
        assert!(format!("{err:#}").contains("api_ur"), "{err:#}");

        let err = load(flags(Some("localhost:8080"), None), None, env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        assert_eq!(normalize_url("https://absa.example.com///").unwrap(), "https://absa.example.com");
    }
}
