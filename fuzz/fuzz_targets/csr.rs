//! Feeds certificate signing requests and certificates to `weft_controller::pki`: the CSR
//! of a joining controller (`sign_csr`) and of an enrolling identity or router
//! (`sign_enrollment_csr`), and a peer's certificate as the TLS layer hands it over
//! (`node_id_from_cert_der`, `ca_fingerprint`).
//!
//! The first byte picks what the rest is:
//! - `0`: PEM text, as the REST bodies carry it;
//! - `1`: the DER of a CSR, wrapped in a `CERTIFICATE REQUEST` PEM block by the target,
//!   so mutations reach the ASN.1 parser instead of breaking the base64;
//! - `2`: the DER of a certificate, given as is and wrapped in a `CERTIFICATE` block.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use weft_controller::pki::{
    ca_fingerprint, generate_ca, node_id_from_cert_der, sign_csr, sign_enrollment_csr, CaMaterial,
};

static CA: LazyLock<CaMaterial> = LazyLock::new(|| generate_ca("fuzz").expect("a CA"));

fn pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(der)
    )
}

fn sign_all(csr_pem: &str) {
    let _ = sign_csr(&CA, csr_pem, 7);
    let _ = sign_enrollment_csr(&CA, csr_pem, "weft-identity-fuzz", false);
    let _ = sign_enrollment_csr(&CA, csr_pem, "weft-router-fuzz", true);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                sign_all(text);
                let _ = ca_fingerprint(text);
            }
        }
        1 => sign_all(&pem("CERTIFICATE REQUEST", rest)),
        2 => {
            let _ = node_id_from_cert_der(rest);
            let _ = ca_fingerprint(&pem("CERTIFICATE", rest));
        }
        _ => {}
    }
});
