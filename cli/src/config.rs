//! Where the API URL and key come from: flags, then environment, then the TOML
//! config file (`~/.config/absa/cli.toml`), then the built-in default URL. The file
//! holds a default profile (top-level `api_url`, `api_key`) and named ones
//! (`[profiles.NAME]`), chosen with `--profile` or `ABSA_PROFILE`; `absa login` writes
//! it with owner-only permissions (0600).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
pub const ENV_API_URL: &str = "ABSA_API_URL";
pub const ENV_API_KEY: &str = "ABSA_API_KEY";
pub const ENV_CONFIG: &str = "ABSA_CLI_CONFIG";
pub const ENV_PROFILE: &str = "ABSA_PROFILE";

/// The config file: the default profile's values at the top, named profiles below.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Layer>,
}

impl File {
    /// The values of `profile` (`None`: the default one); an unknown name is an error.
    fn layer(&self, profile: Option<&str>) -> Result<Layer> {
        match profile {
            None => Ok(Layer { api_url: self.api_url.clone(), api_key: self.api_key.clone() }),
            Some(name) => match self.profiles.get(name) {
                Some(layer) => Ok(layer.clone()),
                None => bail!("no profile {name:?} in the config file (it has: {})", self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")),
            },
        }
    }
}

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

/// The config file to use: `--config`, else `ABSA_CLI_CONFIG`, else the default path;
/// and whether it was named (a named file must exist).
pub fn config_path(config_flag: Option<PathBuf>, env: &impl Fn(&str) -> Option<String>) -> (Option<PathBuf>, bool) {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    match config_flag.or_else(|| env(ENV_CONFIG).map(PathBuf::from)) {
        Some(p) => (Some(p), true),
        None => (default_config_path(&env), false),
    }
}

/// Resolves the settings. `flags` are the command-line values, `env` looks up an
/// environment variable (empty values count as unset), `config_flag` is `--config`,
/// `profile` is `--profile` (else `ABSA_PROFILE`, else the file's default profile).
pub fn load(flags: Layer, config_flag: Option<PathBuf>, profile: Option<String>, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let from_env = Layer { api_url: env(ENV_API_URL), api_key: env(ENV_API_KEY) };
    let profile = profile.or_else(|| env(ENV_PROFILE));
    let (path, explicit) = config_path(config_flag, &env);
    let (file, config_file) = match path {
        Some(p) => match read_file(&p, explicit)? {
            Some(file) => (file.layer(profile.as_deref()).with_context(|| format!("config file {}", p.display()))?, Some(p)),
            None if profile.is_some() => {
                bail!("no profile {:?}: there is no config file {} (absa login --profile writes one)", profile.unwrap_or_default(), p.display())
            }
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
pub fn read_file(path: &Path, explicit: bool) -> Result<Option<File>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).with_context(|| format!("config file {}", path.display())).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
    }
}

pub fn parse(text: &str) -> Result<File> {
    Ok(toml::from_str(text)?)
}

/// Saves `url` and `key` as `profile` (`None`: the default one) in the config file at
/// `path`, keeping its other profiles and anything else in it. The file is written
/// beside the target with owner-only permissions (0600) and renamed over it; its folder
/// is made owner-only (0700) when this creates it.
pub fn save_profile(path: &Path, profile: Option<&str>, url: &str, key: &str) -> Result<()> {
    let mut doc: toml::Table = match std::fs::read_to_string(path) {
        Ok(text) => text.parse().with_context(|| format!("config file {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    let table = match profile {
        None => &mut doc,
        Some(name) => {
            let profiles = doc.entry("profiles").or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let profiles = profiles.as_table_mut().with_context(|| format!("config file {}: `profiles` is not a table", path.display()))?;
            let entry = profiles.entry(name).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            entry.as_table_mut().with_context(|| format!("config file {}: profile {name:?} is not a table", path.display()))?
        }
    };
    table.insert("api_url".into(), toml::Value::String(url.to_owned()));
    table.insert("api_key".into(), toml::Value::String(key.to_owned()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&part)?;
        // A leftover part file keeps its mode: set it whatever it was.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        std::io::Write::write_all(&mut file, doc.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&part, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written.with_context(|| format!("writing config file {}", path.display()))
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

    /// Whether others than the owner may read `path`.
    fn readable_by_others(path: &Path) -> bool {
        std::fs::metadata(path).map(|m| m.permissions().mode() & 0o077 != 0).unwrap_or(false)
    }

    fn flags(url: Option<&str>, key: Option<&str>) -> Layer {
        Layer { api_url: url.map(str::to_owned), api_key: key.map(str::to_owned) }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_default() {
        let file = temp_file("precedence", "api_url = \"http://file:1\"\napi_key = \"file-key\"\n");
        let file_s = file.to_str().unwrap();
        let all_env = env_of(&[(ENV_API_URL, "http://env:2"), (ENV_API_KEY, "env-key"), (ENV_CONFIG, file_s)]);

        let s = load(flags(Some("http://flag:3"), Some("flag-key")), None, None, &all_env).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://flag:3", Some("flag-key")));

        let s = load(Layer::default(), None, None, &all_env).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://env:2", Some("env-key")));
        assert_eq!(s.config_file.as_deref(), Some(file.as_path()));

        let only_file = env_of(&[(ENV_CONFIG, file_s)]);
        let s = load(Layer::default(), None, None, &only_file).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://file:1", Some("file-key")));

        // Mixed: the URL from a flag, the key from the file.
        let s = load(flags(Some("http://flag:3/"), None), None, None, &only_file).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://flag:3", Some("file-key")));

        let s = load(Layer::default(), None, None, env_of(&[("HOME", "/nonexistent-home")])).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key), (DEFAULT_API_URL, None));
        assert_eq!(s.config_file, None);
    }

    #[test]
    fn profiles_are_chosen_by_flag_or_env_and_saved_owner_only() {
        let file = temp_file(
            "profiles",
            "api_url = \"http://default:1\"\napi_key = \"default-key\"\n[profiles.staging]\napi_url = \"http://staging:2\"\napi_key = \"staging-key\"\n",
        );
        let env = env_of(&[(ENV_CONFIG, file.to_str().unwrap())]);
        let s = load(Layer::default(), None, None, &env).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://default:1", Some("default-key")));
        let s = load(Layer::default(), None, Some("staging".into()), &env).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key.as_deref()), ("http://staging:2", Some("staging-key")));
        let by_env = env_of(&[(ENV_CONFIG, file.to_str().unwrap()), (ENV_PROFILE, "staging")]);
        assert_eq!(load(Layer::default(), None, None, &by_env).unwrap().api_key.as_deref(), Some("staging-key"));
        let err = load(Layer::default(), None, Some("prod".into()), &env).unwrap_err();
        assert!(format!("{err:#}").contains("no profile \"prod\" in the config file (it has: staging)"), "{err:#}");

        // Saving keeps the rest of the file and leaves it readable by its owner only.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&file));
        save_profile(&file, Some("prod"), "http://prod:3", "prod-key").unwrap();
        assert!(!readable_by_others(&file));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let saved = read_file(&file, true).unwrap().unwrap();
        assert_eq!(saved.api_key.as_deref(), Some("default-key"));
        assert_eq!(saved.profiles.keys().collect::<Vec<_>>(), ["prod", "staging"]);
        assert_eq!(saved.profiles["prod"].api_url.as_deref(), Some("http://prod:3"));
        save_profile(&file, None, "http://default:9", "new-key").unwrap();
        assert_eq!(read_file(&file, true).unwrap().unwrap().api_key.as_deref(), Some("new-key"));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = load(flags(Some(""), None), None, None, env_of(&[(ENV_API_URL, "  "), (ENV_API_KEY, ""), ("HOME", "/nonexistent")])).unwrap();
        assert_eq!((s.api_url.as_str(), s.api_key), (DEFAULT_API_URL, None));
    }

    #[test]
    fn config_flag_beats_config_env_and_default_path_is_under_home() {
        let a = temp_file("flag-a", "api_key = \"a\"\n");
        let b = temp_file("flag-b", "api_key = \"b\"\n");
        let env = env_of(&[(ENV_CONFIG, b.to_str().unwrap())]);
        let s = load(Layer::default(), Some(a.clone()), None, &env).unwrap();
        assert_eq!(s.api_key.as_deref(), Some("a"));

        let home = env_of(&[("HOME", "/home/u")]);
        assert_eq!(default_config_path(&home), Some(PathBuf::from("/home/u/.config/absa/cli.toml")));
        let xdg = env_of(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")]);
        assert_eq!(default_config_path(&xdg), Some(PathBuf::from("/x/absa/cli.toml")));
    }

    #[test]
    fn missing_file_is_an_error_only_when_named() {
        let missing = std::env::temp_dir().join("absa-cli-test-does-not-exist.toml");
        assert!(load(Layer::default(), Some(missing.clone()), None, env_of(&[])).is_err());
        let home = env_of(&[("HOME", "/nonexistent-home")]);
        assert!(load(Layer::default(), None, None, home).is_ok());
    }

    #[test]
    fn bad_files_and_urls_are_reported() {
        let typo = temp_file("typo", "api_ur = \"http://x\"\n");
        let err = load(Layer::default(), Some(typo.clone()), None, env_of(&[])).unwrap_err();
        assert!(format!("{err:#}").contains(typo.to_str().unwrap()), "{err:#}");
        assert!(format!("{err:#}").contains("api_ur"), "{err:#}");

        let err = load(flags(Some("localhost:8080"), None), None, None, env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        assert_eq!(normalize_url("https://absa.example.com///").unwrap(), "https://absa.example.com");
    }
}
