//! Cluster PKI: the cluster certificate authority and node certificates.
//!
//! Every weft cluster has its own self-signed CA (ECDSA P-256). Each controller node
//! holds a certificate signed by that CA whose common name is `weft-node-<id>` and
//! whose SANs list the addresses peers and clients use to reach it. The same
//! certificate serves both as the node's HTTPS server certificate and as its client
//! certificate towards peers, so mutual TLS identifies the calling node by its CN.
//!
//! This module owns generating and parsing that material (with rcgen and
//! x509-parser, ring backend only) so the rest of the controller only handles PEM
//! strings. A joining node creates its key locally and sends only a CSR; the CA
//! decides the subject, validity and key usages itself and copies nothing but the
//! IP/DNS SANs from the request.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

/// Validity of the cluster CA certificate (about ten years).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of a node certificate (one year).
const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are back-dated by this much to tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(3600);
/// Common-name prefix of node certificates; the node id follows in decimal.
pub const NODE_CN_PREFIX: &str = "weft-node-";

/// Errors from generating or parsing cluster PKI material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to generate, parse or sign something.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The input held no PEM block of the expected kind, or it was not valid PEM.
    #[error("invalid PEM: expected {0}")]
    Pem(&'static str),
    /// A certificate's DER could not be parsed as X.509.
    #[error("invalid X.509 certificate: {0}")]
    X509(String),
    /// A certificate or CSR would have no subject alternative names.
    #[error("no host names or IP addresses given")]
    NoHosts,
    /// A host name was empty or not representable as a DNS SAN.
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// A CSR asked for a SAN type other than DNS name or IP address.
    #[error("CSR requests an unsupported subject alternative name type")]
    UnsupportedSan,
    /// The CA private key does not belong to the CA certificate.
    #[error("CA key does not match CA certificate")]
    KeyMismatch,
}

/// The cluster CA: certificate and private key, both PEM.
#[derive(Clone)]
pub struct CaMaterial {
    /// The self-signed CA certificate (PEM, `CERTIFICATE`).
    pub cert_pem: String,
    /// The CA private key (PEM, PKCS#8 `PRIVATE KEY`). Secret.
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates a new self-signed cluster CA (ECDSA P-256, valid ten years, path length 0).
pub fn generate_ca(cluster_name: &str) -> Result<CaMaterial, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let name = cluster_name.trim();
    if name.is_empty() {
        dn.push(DnType::CommonName, "weft cluster CA");
    } else {
        dn.push(DnType::CommonName, format!("weft cluster CA {name}"));
        dn.push(DnType::OrganizationName, name);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Generates a fresh ECDSA P-256 private key as a PKCS#8 PEM string.
pub fn generate_key_pem() -> Result<String, PkiError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// Builds a PEM certificate signing request for `key_pem` listing `hosts` as SANs.
///
/// Each host becomes an IP SAN if it parses as an IP address (without brackets),
/// otherwise a DNS SAN. At least one non-empty host is required.
pub fn make_csr(key_pem: &str, hosts: &[String]) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = hosts_to_sans(hosts)?;
    Ok(params.serialize_request(&key)?.pem()?)
}

/// Signs a CSR with the cluster CA and returns the node certificate as PEM.
///
/// The CSR's signature is verified and only its DNS/IP SANs are used; the subject is
/// set to CN `weft-node-<node_id>`, the certificate is not a CA, carries extended key
/// usages serverAuth and clientAuth, and is valid for one year.
pub fn sign_csr(ca: &CaMaterial, csr_pem: &str, node_id: u64) -> Result<String, PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut sans = Vec::with_capacity(csr.params.subject_alt_names.len());
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::DnsName(_) | SanType::IpAddress(_) => sans.push(san.clone()),
            _ => return Err(PkiError::UnsupportedSan),
        }
    }
    if sans.is_empty() {
        return Err(PkiError::NoHosts);
    }

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{NODE_CN_PREFIX}{node_id}"));
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    sign_for_key(ca, params, csr.public_key)
}

/// Issues the certificate `params` describes for `public_key` (a CSR's), signed by the
/// cluster CA: the CA's key identifier, a random serial, [`NODE_VALIDITY`].
fn sign_for_key(
    ca: &CaMaterial,
    mut params: CertificateParams,
    public_key: rcgen::PublicKey,
) -> Result<String, PkiError> {
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, NODE_VALIDITY);
    let issuer = ca_issuer(ca)?;
    let request = CertificateSigningRequestParams { params, public_key };
    Ok(request.signed_by(&issuer)?.pem())
}

/// Common-name prefix of enrolled identities' certificates; the identity id follows.
pub const IDENTITY_CN_PREFIX: &str = "weft-identity-";
/// Common-name prefix of enrolled edge routers' certificates; the router id follows.
pub const ROUTER_CN_PREFIX: &str = "weft-router-";

/// Signs an enrollment CSR with the cluster CA: returns `(cert_pem, fingerprint)`.
///
/// The CA decides everything but the public key. The subject is CN `cn` (the identity's
/// or router's id behind its prefix, never anything the CSR asks for), the certificate is
/// not a CA, is valid for one year, and has extended key usage clientAuth. A router
/// (`server`) also gets serverAuth and keeps the CSR's DNS/IP SANs, since edge clients
/// will connect to it; an identity's SANs are dropped.
pub fn sign_enrollment_csr(
    ca: &CaMaterial,
    csr_pem: &str,
    cn: &str,
    server: bool,
) -> Result<(String, String), PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if server {
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::DnsName(_) | SanType::IpAddress(_) => {
                    params.subject_alt_names.push(san.clone())
                }
                _ => return Err(PkiError::UnsupportedSan),
            }
        }
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    let pem = sign_for_key(ca, params, csr.public_key)?;
    let fingerprint = ca_fingerprint(&pem)?;
    Ok((pem, fingerprint))
}

/// Generates a key, a CSR for `hosts` and signs it: returns `(cert_pem, key_pem)`.
pub fn issue_node_cert(
    ca: &CaMaterial,
    hosts: &[String],
    node_id: u64,
) -> Result<(String, String), PkiError> {
    let key_pem = generate_key_pem()?;
    let csr = make_csr(&key_pem, hosts)?;
    let cert_pem = sign_csr(ca, &csr, node_id)?;
    Ok((cert_pem, key_pem))
}

/// Lowercase hex SHA-256 of the DER of the first certificate in `cert_pem` (64 chars).
pub fn ca_fingerprint(cert_pem: &str) -> Result<String, PkiError> {
    let der = first_cert_der(cert_pem)?;
    x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::X509(e.to_string()))?;
    Ok(der_fingerprint(&der))
}

/// Lowercase hex SHA-256 of a certificate's DER (what [`ca_fingerprint`] computes).
pub fn der_fingerprint(der: &[u8]) -> String {
    hex_lower(&Sha256::digest(der))
}

/// Extracts the node id from a certificate whose subject has exactly one CN of the
/// form `weft-node-<decimal id>`. Returns `None` for anything else.
pub fn node_id_from_cert_der(der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns.next()?.as_str().ok()?;
    if cns.next().is_some() {
        return None;
    }
    let digits = cn.strip_prefix(NODE_CN_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Host part of a URL, suitable as a certificate SAN: `"https://127.0.0.1:7001"` gives
/// `"127.0.0.1"`, `"https://[::1]:7001"` gives `"::1"` (no brackets), DNS names are
/// returned lowercased. Returns `None` if `url` has no scheme or no host.
pub fn host_of_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url.trim()).ok()?;
    let host = parsed.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_string())
}

/// Builds an rcgen issuer from the CA material, checking that key and certificate match.
fn ca_issuer(ca: &CaMaterial) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem)?;
    let der = first_cert_der(&ca.cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::X509(e.to_string()))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::KeyMismatch);
    }
    Ok(Issuer::from_ca_cert_der(&der, key)?)
}

fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or(PkiError::Pem("CERTIFICATE"))
}

fn hosts_to_sans(hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    let mut sans = Vec::with_capacity(hosts.len());
    for host in hosts {
        let host = host.trim();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(PkiError::InvalidHost(host.to_string()));
        }
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|_| PkiError::InvalidHost(host.to_string()))?,
            ),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    if sans.is_empty() {
        return Err(PkiError::NoHosts);
    }
    Ok(sans)
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = now.checked_add(validity).unwrap_or(now).into();
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // keep the encoding at full length
    SerialNumber::from_slice(&bytes)
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    fn parse_pem_cert(pem: &str) -> Vec<u8> {
        first_cert_der(pem).unwrap().to_vec()
    }

    #[test]
    fn ca_is_self_signed_ca_with_ten_year_validity() {
        let ca = generate_ca("prod").unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
        let der = parse_pem_cert(&ca.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert.subject(), cert.issuer());
        let years = (cert.validity().not_after.timestamp()
            - cert.validity().not_before.timestamp())
            / (365 * 24 * 3600);
        assert_eq!(years, 10);
        cert.verify_signature(None).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn node_cert_has_cn_sans_eku_and_chains_to_ca() {
        let ca = generate_ca("test").unwrap();
        let (cert_pem, key_pem) =
            issue_node_cert(&ca, &hosts(&["127.0.0.1", "[::1]", "node1.example"]), 42).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let der = parse_pem_cert(&cert_pem);
        assert_eq!(node_id_from_cert_der(&der), Some(42));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("ip:{}", ip.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, vec!["ip:4", "ip:16", "node1.example"]);
        let ca_der = parse_pem_cert(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / (24 * 3600);
        assert_eq!(days, 365);
    }

    #[test]
    fn sign_csr_ignores_requested_ca_and_subject() {
        let ca = generate_ca("test").unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["10.0.0.1".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "weft-node-1");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert_pem = sign_csr(&ca, &csr, 7).unwrap();
        let der = parse_pem_cert(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(node_id_from_cert_der(&der), Some(7));
    }

    #[test]
    fn sign_csr_rejects_garbage_and_unsupported_sans() {
        let ca = generate_ca("test").unwrap();
        assert!(sign_csr(&ca, "", 1).is_err());
        assert!(sign_csr(
            &ca,
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            1
        )
        .is_err());
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI("spiffe://x/y".try_into().unwrap())];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(
            sign_csr(&ca, &csr, 1),
            Err(PkiError::UnsupportedSan)
        ));
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        assert!(matches!(sign_csr(&ca, &csr, 1), Err(PkiError::NoHosts)));
    }

    #[test]
    fn sign_csr_detects_mismatched_ca_key() {
        let ca = generate_ca("a").unwrap();
        let other = generate_ca("b").unwrap();
        let bad = CaMaterial {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        let csr = make_csr(&generate_key_pem().unwrap(), &hosts(&["127.0.0.1"])).unwrap();
        assert!(matches!(
            sign_csr(&bad, &csr, 1),
            Err(PkiError::KeyMismatch)
        ));
    }

    #[test]
    fn make_csr_validates_hosts_and_key() {
        let key = generate_key_pem().unwrap();
        assert!(matches!(make_csr(&key, &[]), Err(PkiError::NoHosts)));
        assert!(matches!(
            make_csr(&key, &hosts(&[""])),
            Err(PkiError::InvalidHost(_))
        ));
        assert!(matches!(
            make_csr(&key, &hosts(&["h\u{e9}.example"])),
            Err(PkiError::InvalidHost(_))
        ));
        assert!(make_csr("not a key", &hosts(&["a"])).is_err());
        let csr = make_csr(&key, &hosts(&["a.example", "a.example"])).unwrap();
        assert!(csr.contains("CERTIFICATE REQUEST"));
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        let ca = generate_ca("fp").unwrap();
        let fp = ca_fingerprint(&ca.cert_pem).unwrap();
        assert_eq!(fp.len(), 64);
        assert!(fp
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(fp, hex_lower(&Sha256::digest(parse_pem_cert(&ca.cert_pem))));
        assert_ne!(
            fp,
            ca_fingerprint(&generate_ca("fp").unwrap().cert_pem).unwrap()
        );
        assert!(matches!(ca_fingerprint("junk"), Err(PkiError::Pem(_))));
        assert!(
            ca_fingerprint("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn enrollment_cert_takes_only_the_key_from_the_csr() {
        let ca = generate_ca("t").unwrap();
        let key = generate_key_pem().unwrap();
        let csr = make_csr(&key, &hosts(&["evil.example", "10.0.0.1"])).unwrap();
        let (pem, fp) = sign_enrollment_csr(&ca, &csr, "weft-identity-abc", false).unwrap();
        let der = parse_pem_cert(&pem);
        assert_eq!(fp, der_fingerprint(&der));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "weft-identity-abc");
        assert!(cert.subject_alternative_name().unwrap().is_none());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(node_id_from_cert_der(&der), None);
        // A router keeps its SANs and may serve TLS.
        let (pem, _) = sign_enrollment_csr(&ca, &csr, "weft-router-r1", true).unwrap();
        let der = parse_pem_cert(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        assert_eq!(
            cert.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .len(),
            2
        );
        assert!(sign_enrollment_csr(&ca, "not a csr", "x", false).is_err());
    }

    #[test]
    fn node_id_parsing_is_strict() {
        let ca = generate_ca("x").unwrap();
        assert_eq!(node_id_from_cert_der(&parse_pem_cert(&ca.cert_pem)), None);
        assert_eq!(node_id_from_cert_der(b""), None);
        assert_eq!(node_id_from_cert_der(b"\x30\x03\x02\x01\x00"), None);
        let key = KeyPair::generate().unwrap();
        for cn in [
            "weft-node-",
            "weft-node-+5",
            "weft-node-1x",
            "node-1",
            "weft-node-99999999999999999999",
        ] {
            let mut params = CertificateParams::new(vec!["a".to_string()]).unwrap();
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(node_id_from_cert_der(cert.der()), None, "{cn}");
        }
        let mut params = CertificateParams::new(vec!["a".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("weft-node-{}", u64::MAX));
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(node_id_from_cert_der(cert.der()), Some(u64::MAX));
    }

    #[test]
    fn host_of_url_handles_ipv4_ipv6_and_dns() {
        assert_eq!(
            host_of_url("https://127.0.0.1:7001").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of_url("https://[::1]:7001/x").as_deref(), Some("::1"));
        assert_eq!(
            host_of_url("https://Node1.Example:7001/api?q=1").as_deref(),
            Some("node1.example")
        );
        assert_eq!(
            host_of_url("http://localhost").as_deref(),
            Some("localhost")
        );
        assert_eq!(host_of_url("127.0.0.1:7001"), None);
        assert_eq!(host_of_url(""), None);
        assert_eq!(host_of_url("not a url"), None);
        assert_eq!(host_of_url("unix:/tmp/sock"), None);
    }
}
