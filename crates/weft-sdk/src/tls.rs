//! The HTTPS client: rustls with the ring provider only, trusting only the cluster CA
//! (normal host-name checks), optionally presenting a client certificate (identity
//! files). Built once per [`Client`](crate::Client); its connections are pooled.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A reqwest client over [`client_config`]: HTTP/1.1, no proxy, the given connect
/// timeout (TCP and TLS). Per-request timeouts are set by each attempt.
pub(crate) fn http_client(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    connect_timeout: Duration,
) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(ca_pem, identity)?)
        .no_proxy()
        .http1_only()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Config(format!("building the HTTPS client: {e}")))
}

/// rustls configuration trusting only the CA(s) in `ca_pem`, presenting
/// `identity = (cert_pem, key_pem)` when given. ALPN offers only `http/1.1`.
fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "the CA")? {
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("the CA certificate: {e}")))?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|_| Error::Config("the identity's key is not a PEM private key".into()))?;
            builder
                .with_client_auth_cert(certs(cert_pem, "the identity's certificate")?, key)
                .map_err(|e| Error::Config(format!("the identity's certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM text; at least one.
fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::Config(format!("{what} is not PEM")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{what} holds no PEM certificate")));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_that_is_not_pem_is_a_config_error() {
        let e = http_client("not a pem", None, Duration::from_secs(1)).err();
        assert!(matches!(e, Some(Error::Config(m)) if m.contains("the CA")));
    }
}
