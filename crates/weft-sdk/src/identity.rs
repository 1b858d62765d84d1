//! The identity file written by `weft enroll`, in OpenZiti's layout:
//!
//! ```json
//! { "ztAPI": "https://ctrl-1:1280", "ztAPIs": ["https://ctrl-1:1280", "..."],
//!   "id": { "key": "pem:-----BEGIN PRIVATE KEY...", "cert": "pem:...", "ca": "pem:..." } }
//! ```
//!
//! It holds everything a client needs: where the controllers are, the CA to trust, and
//! the client certificate that logs in with `authenticate?method=cert`.

use std::path::Path;

use serde::Deserialize;

use crate::Error;

/// An enrolled identity: controller URLs, the cluster CA and a client certificate.
#[derive(Clone)]
pub struct IdentityFile {
    /// The controller the identity enrolled with (`ztAPI`).
    pub api: String,
    /// Every controller named at enrollment (`ztAPIs`); may be empty in foreign files.
    pub apis: Vec<String>,
    /// The client certificate (PEM), presented in the TLS handshake.
    pub cert_pem: String,
    /// The certificate's private key (PEM).
    pub key_pem: String,
    /// The cluster CA (PEM) that servers must chain to.
    pub ca_pem: String,
}

impl std::fmt::Debug for IdentityFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityFile")
            .field("api", &self.api)
            .field("apis", &self.apis)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The file as stored (OpenZiti field names).
#[derive(Deserialize)]
struct RawIdentity {
    #[serde(rename = "ztAPI")]
    zt_api: String,
    #[serde(rename = "ztAPIs", default)]
    zt_apis: Vec<String>,
    id: RawId,
}

/// The `id` object: three PEM values with a `pem:` prefix.
#[derive(Deserialize)]
struct RawId {
    key: String,
    cert: String,
    ca: String,
}

impl IdentityFile {
    /// Reads and checks an identity file.
    pub fn load(path: &Path) -> Result<IdentityFile, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        IdentityFile::parse(&text)
            .map_err(|e| Error::Config(format!("identity file {}: {e}", path.display())))
    }

    /// Parses the JSON text of an identity file; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<IdentityFile, String> {
        let raw: RawIdentity =
            serde_json::from_str(text).map_err(|e| format!("not an identity file: {e}"))?;
        let pem = |field: &str, value: String| -> Result<String, String> {
            let v = value.strip_prefix("pem:").unwrap_or(&value);
            if !v.trim_start().starts_with("-----BEGIN ") {
                return Err(format!("id.{field} is not a \"pem:\" value"));
            }
            Ok(v.to_owned())
        };
        if raw.zt_api.trim().is_empty() {
            return Err("ztAPI is empty".into());
        }
        Ok(IdentityFile {
            api: raw.zt_api,
            apis: raw.zt_apis,
            key_pem: pem("key", raw.id.key)?,
            cert_pem: pem("cert", raw.id.cert)?,
            ca_pem: pem("ca", raw.id.ca)?,
        })
    }

    /// The controller URLs to start from: `ztAPIs`, or `ztAPI` when that is empty.
    pub fn urls(&self) -> Vec<String> {
        if self.apis.is_empty() {
            vec![self.api.clone()]
        } else {
            self.apis.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PEM: &str = "-----BEGIN X-----\nAA==\n-----END X-----\n";

    #[test]
    fn parses_the_enroll_layout() {
        let doc = json!({"ztAPI": "https://a:1", "ztAPIs": ["https://a:1", "https://b:1"],
            "id": {"key": format!("pem:{PEM}"), "cert": format!("pem:{PEM}"), "ca": format!("pem:{PEM}")}});
        let id = IdentityFile::parse(&doc.to_string()).unwrap();
        assert_eq!(id.urls(), vec!["https://a:1", "https://b:1"]);
        assert_eq!(id.ca_pem, PEM);
        assert!(!format!("{id:?}").contains("BEGIN"));
    }

    #[test]
    fn rejects_what_is_not_pem_and_falls_back_to_zt_api() {
        let doc = json!({"ztAPI": "https://a:1",
            "id": {"key": "file:/x", "cert": format!("pem:{PEM}"), "ca": format!("pem:{PEM}")}});
        let err = IdentityFile::parse(&doc.to_string()).err().unwrap();
        assert!(err.contains("id.key"), "{err}");
        let doc = json!({"ztAPI": "https://a:1",
            "id": {"key": format!("pem:{PEM}"), "cert": format!("pem:{PEM}"), "ca": format!("pem:{PEM}")}});
        assert_eq!(
            IdentityFile::parse(&doc.to_string()).unwrap().urls(),
            vec!["https://a:1"]
        );
        assert!(IdentityFile::parse("{}").is_err());
        let missing = IdentityFile::load(Path::new("/nonexistent/identity.json"));
        assert!(matches!(missing, Err(Error::Config(_))));
    }
}
