//! CLI profiles: what `weft login` remembers so that later commands need no flags.
//!
//! A profile is one file, `profiles/<name>.json` in the config dir (`$WEFT_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/weft`, else `$HOME/.config/weft`), holding the controller URLs, a copy
//! of the cluster CA (so the profile keeps working when the CA file moves), the user name
//! and the session token with its expiry. Never the password. It holds a bearer token, so
//! it is created with mode 0600 (from the start: never readable by others, not even for a
//! moment) and written atomically (temp file, fsync, rename), so a crash leaves either
//! the old profile or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The profile used when neither `--profile` nor `WEFT_PROFILE` names one.
pub const DEFAULT_PROFILE: &str = "default";

/// Why a profile could not be found, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// None of the variables that locate the config dir is set.
    #[error("no config directory: set WEFT_CONFIG_DIR, XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    /// The name would not make a plain file name.
    #[error("invalid profile name {0:?}: use letters, digits, '.', '-' and '_'")]
    BadName(String),
    /// No file for this profile: the user has not logged in with it.
    #[error("no profile {name:?} (no {path}): run weft login first")]
    NotFound {
        /// The profile's name.
        name: String,
        /// The file that is missing.
        path: String,
    },
    /// Reading, writing or removing the file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`...).
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a profile (edited by hand, or from another version).
    #[error("{path} is not a valid profile: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

/// What one profile file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Controller API URLs, in the order to try them (those given to `weft login` first,
    /// then the others the cluster listed).
    pub controllers: Vec<String>,
    /// The cluster CA certificate (PEM), copied at login.
    pub ca_pem: String,
    /// Who logged in (for `weft status`).
    pub username: String,
    /// The session token (sent as `zt-session`).
    pub token: String,
    /// When the token expires (RFC 3339), as the controller said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Profile {
    /// Whether the stored token has expired by the local clock (an unknown or unreadable
    /// expiry counts as not expired: the controller decides).
    pub fn expired(&self) -> bool {
        self.expires_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t < chrono::Utc::now())
    }
}

/// The config dir from the environment (see the module doc).
pub fn config_dir() -> Result<PathBuf, ProfileError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("WEFT_CONFIG_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CONFIG_HOME") {
        return Ok(d.join("weft"));
    }
    var("HOME")
        .map(|h| h.join(".config").join("weft"))
        .ok_or(ProfileError::NoConfigDir)
}

/// Checks that `name` makes a plain file name (no separators, no leading dot).
pub fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadName(name.to_owned()))
    }
}

/// The file of profile `name`.
pub fn path(name: &str) -> Result<PathBuf, ProfileError> {
    check_name(name)?;
    Ok(config_dir()?.join("profiles").join(format!("{name}.json")))
}

/// Reads profile `name`.
pub fn load(name: &str) -> Result<Profile, ProfileError> {
    let p = path(name)?;
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ProfileError::NotFound {
                name: name.to_owned(),
                path: p.display().to_string(),
            })
        }
        Err(source) => return Err(io("reading", &p, source)),
    };
    serde_json::from_str(&text).map_err(|source| ProfileError::Parse {
        path: p.display().to_string(),
        source,
    })
}

/// Writes profile `name` atomically with mode 0600; returns its path.
pub fn save(name: &str, profile: &Profile) -> Result<PathBuf, ProfileError> {
    let p = path(name)?;
    let dir = p.parent().map(Path::to_owned).unwrap_or_default();
    create_private_dir(&dir)?;
    let mut text = serde_json::to_vec_pretty(profile).map_err(|source| ProfileError::Parse {
        path: p.display().to_string(),
        source,
    })?;
    text.push(b'\n');
    write_atomically(&p, &text)?;
    Ok(p)
}

/// Removes profile `name`; `false` if there was none.
pub fn remove(name: &str) -> Result<bool, ProfileError> {
    let p = path(name)?;
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io("removing", &p, source)),
    }
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> ProfileError {
    ProfileError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` and its parents, the new ones with mode 0700.
fn create_private_dir(dir: &Path) -> Result<(), ProfileError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| io("creating", dir, e))
}

/// Writes `bytes` to a new temp file beside `target` (mode 0600 from creation), syncs it,
/// renames it over `target` and syncs the directory.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), ProfileError> {
    let dir = target.parent().map(Path::to_owned).unwrap_or_default();
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing", target, e));
    }
    // The rename is durable once the directory is synced (best effort where a directory
    // cannot be opened for syncing).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for ok in ["default", "prod-eu.1", "a_b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", "x\\y", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn atomic_write_makes_a_private_file_and_replaces_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let target = dir.path().join("p.json");
        write_atomically(&target, b"one").unwrap_or_else(|e| panic!("{e}"));
        write_atomically(&target, b"two").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&target).ok(), Some(b"two".to_vec()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target)
                .map(|m| m.permissions().mode() & 0o777)
                .ok();
            assert_eq!(mode, Some(0o600));
        }
        let leftovers = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1, "the temp file is gone after the rename");
    }

    #[test]
    fn expiry_is_read_from_rfc3339() {
        let mut p = Profile {
            controllers: vec![],
            ca_pem: String::new(),
            username: "admin".into(),
            token: "t".into(),
            expires_at: Some("2000-01-01T00:00:00Z".into()),
        };
        assert!(p.expired());
        p.expires_at = Some("2999-01-01T00:00:00Z".into());
        assert!(!p.expired());
        p.expires_at = None;
        assert!(!p.expired());
    }
}
