//! Feeds the token verifiers of `weft_controller::tokens`: session and join bearer tokens
//! (`verify_session`, `verify_join`, `peek_join`) and enrollment JWTs
//! (`verify_enrollment`, `peek_enrollment`).
//!
//! The first byte picks what the rest is:
//! - `0`: a token as received, given to every verifier;
//! - `1` / `2`: the claims JSON of a session / join token, which the target signs with
//!   the signer key the verifiers trust, so claim decoding and the expiry check run
//!   behind a valid signature (random bytes never get past it);
//! - `3`: an enrollment JWT's header and claims JSON, split at the first `0` byte,
//!   base64url-encoded and signed the same way.
//!
//! The key is fixed (a constant seed, loaded through `NodeSigner::load_or_create`), so the
//! seed corpus holds real tokens that verify.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use weft_controller::tokens::{
    peek_enrollment, peek_join, verify_enrollment, verify_join, verify_session, NodeSigner,
    JOIN_PREFIX, SESSION_PREFIX,
};

/// The signer's node id (`kid`).
const KID: u64 = 1;
/// The signer's seed; the seed corpus was signed with it.
const SEED: [u8; 32] = [7; 32];
/// "Now" for expiry checks: 2026-01-01, in milliseconds.
const NOW_MS: i64 = 1_767_225_600_000;

/// The trusted public key (hex), as the cluster state would publish it.
static PUBLIC_HEX: LazyLock<String> = LazyLock::new(|| {
    let path = std::env::temp_dir().join(format!("weft-fuzz-tokens-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, SEED).expect("write the signer seed");
    let signer = NodeSigner::load_or_create(&path, KID).expect("load the signer seed");
    let _ = std::fs::remove_file(&path);
    signer.public_key_hex()
});

/// The same key, to sign payloads `NodeSigner` would never produce.
static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&SEED));

fn key_for(kid: u64) -> Option<String> {
    match kid {
        KID => Some(PUBLIC_HEX.clone()),
        // A registered but broken key.
        2 => Some("zz".into()),
        _ => None,
    }
}

/// `prefix + b64(payload) + "." + b64(sig)`, as `NodeSigner` builds bearer tokens.
fn bearer(prefix: &str, payload: &[u8]) -> String {
    let mut token = String::from(prefix);
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let sig = KEY.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut token);
    token
}

/// `b64(header) + "." + b64(claims) + "." + b64(sig)`, as enrollment JWTs are built.
fn jwt(header: &[u8], claims: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let sig = KEY.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut token);
    token
}

fn all_verifiers(token: &str) {
    let _ = verify_session(token, NOW_MS, key_for);
    let _ = verify_join(token, NOW_MS, key_for);
    let _ = peek_join(token);
    let _ = verify_enrollment(token, key_for);
    let _ = peek_enrollment(token);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                all_verifiers(token);
            }
        }
        1 => all_verifiers(&bearer(SESSION_PREFIX, rest)),
        2 => all_verifiers(&bearer(JOIN_PREFIX, rest)),
        3 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            all_verifiers(&jwt(header, claims));
        }
        _ => {}
    }
});
