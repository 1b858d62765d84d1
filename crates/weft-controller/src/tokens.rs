//! Signed bearer tokens (sessions and cluster join tokens) and password hashing.
//!
//! Every controller node owns an Ed25519 signing key (`NodeSigner`), persisted as a
//! 32-byte seed file. Its public key is published through the replicated cluster
//! state under the node id, so any node can verify a token minted by any other node
//! without a shared secret: the token names the signer in its `kid` claim and the
//! verifier looks the key up with a caller-supplied `key_for` function.
//!
//! Token format: `<prefix><base64url(json claims)>.<base64url(ed25519 signature)>`,
//! where the signature covers the ASCII bytes `<prefix><base64url(json claims)>` and
//! base64url has no padding. The prefix is `wst1.` for session tokens and `wjt1.` for
//! join tokens; since it is signed, a token of one kind can never pass as the other.
//!
//! Passwords are stored as argon2id PHC strings with the crate's default parameters.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Prefix of session tokens.
pub const SESSION_PREFIX: &str = "wst1.";
/// Prefix of join tokens.
pub const JOIN_PREFIX: &str = "wjt1.";
/// Tokens longer than this are rejected as malformed before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Errors from signing, verifying or persisting tokens and from password hashing.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not of the expected shape (prefix, base64url, JSON claims, signature length).
    #[error("malformed token")]
    Malformed,
    /// The token is well formed but of the other kind (a session token where a join
    /// token was expected, or the reverse).
    #[error("wrong kind of token: expected a {expected} token")]
    WrongKind {
        /// `"session"` or `"join"`.
        expected: &'static str,
    },
    /// The signature does not verify under the signer's public key.
    #[error("bad token signature")]
    BadSignature,
    /// No public key is known for this signer id; the caller may retry after its view
    /// of the cluster state has caught up.
    #[error("unknown signing key {0}")]
    UnknownKey(u64),
    /// The public key registered for this signer id is not a valid Ed25519 key in hex.
    #[error("invalid public key registered for signer {0}")]
    InvalidKey(u64),
    /// The token's `exp` is not after the verification time.
    #[error("token expired")]
    Expired,
    /// The signing key file exists but is not a 32-byte seed.
    #[error("signing key file {path:?} is corrupt: expected 32 bytes, found {len}")]
    CorruptKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its actual length in bytes.
        len: usize,
    },
    /// Reading or writing the signing key file failed.
    #[error("signing key file I/O: {0}")]
    Io(#[from] io::Error),
    /// Argon2 failed to hash a password.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Claims of a session token: who is logged in, until when, and which node signed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionClaims {
    /// Session id (lets a session be revoked).
    pub sid: String,
    /// Subject: the user name.
    pub sub: String,
    /// Whether the user is an administrator.
    pub adm: bool,
    /// Issued at, milliseconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, milliseconds since the Unix epoch.
    pub exp: i64,
    /// Node id of the signer, used to look up its public key.
    pub kid: u64,
}

/// Claims of a join token, handed to an operator to admit a new node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JoinClaims {
    /// Lowercase hex SHA-256 fingerprint of the cluster CA certificate, which the
    /// joining node uses to authenticate the cluster before it trusts anything.
    pub ca: String,
    /// Expires at, milliseconds since the Unix epoch.
    pub exp: i64,
    /// Node id of the signer, used to look up its public key.
    pub kid: u64,
    /// Random nonce making each join token unique (and individually revocable).
    pub nonce: String,
}

/// Claims of an enrollment token (a JWT, `alg` EdDSA, `kid` the signing node's id), the
/// file an admin hands to whoever enrolls an identity or router. Field names follow
/// OpenZiti's enrollment JWT, plus `caFp`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentClaims {
    /// The issuing controller's API URL.
    pub iss: String,
    /// The identity (`ott`) or edge router (`erott`) id.
    pub sub: String,
    /// The one-time token itself.
    pub jti: String,
    /// Enrollment method: `ott` or `erott`.
    pub em: String,
    /// Expiry, seconds since the Unix epoch (JWT convention).
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Every controller's API URL, so enrollment and later logins can fail over.
    pub ctrls: Vec<String>,
    /// Lowercase hex SHA-256 fingerprint of the cluster CA certificate: the enrolling
    /// client trusts the CA it downloads only if it matches.
    pub ca_fp: String,
}

/// The JOSE header of enrollment JWTs.
#[derive(Serialize, Deserialize)]
struct JwtHeader {
    alg: String,
    typ: String,
    kid: String,
}

/// A node's Ed25519 token-signing key.
pub struct NodeSigner {
    /// The node id that signs; written as `kid` into every token it mints.
    pub node_id: u64,
    key: SigningKey,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("node_id", &self.node_id)
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// Loads the 32-byte seed at `path`, or creates it if the file does not exist.
    ///
    /// A new seed comes from the OS RNG and is written atomically: to a temporary file
    /// created with mode 0600 in the same directory, fsynced, renamed into place, and
    /// the directory fsynced. Missing parent directories are created. A file of any
    /// other length than 32 bytes is `CorruptKeyFile` (never silently replaced).
    pub fn load_or_create(path: &Path, node_id: u64) -> Result<NodeSigner, TokenError> {
        match fs::read(path) {
            Ok(bytes) => {
                let len = bytes.len();
                let seed: [u8; 32] = bytes.try_into().map_err(|_| TokenError::CorruptKeyFile {
                    path: path.to_path_buf(),
                    len,
                })?;
                warn_if_readable_by_others(path);
                Ok(Self::from_seed(node_id, &seed))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                write_atomically(path, &seed)?;
                let signer = Self::from_seed(node_id, &seed);
                seed.fill(0);
                Ok(signer)
            }
            Err(e) => Err(TokenError::Io(e)),
        }
    }

    /// Creates an in-memory signer with a fresh random key (nothing is persisted).
    pub fn generate(node_id: u64) -> NodeSigner {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let signer = Self::from_seed(node_id, &seed);
        seed.fill(0);
        signer
    }

    fn from_seed(node_id: u64, seed: &[u8; 32]) -> NodeSigner {
        NodeSigner {
            node_id,
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The Ed25519 public key as 64 lowercase hex characters.
    pub fn public_key_hex(&self) -> String {
        hex_encode(self.key.verifying_key().as_bytes())
    }

    /// Signs session claims into a `wst1.` token. `claims.kid` is written as given;
    /// callers set it to `self.node_id`.
    pub fn sign_session(&self, claims: &SessionClaims) -> String {
        self.sign(SESSION_PREFIX, claims)
    }

    /// Signs join claims into a `wjt1.` token. `claims.kid` is written as given;
    /// callers set it to `self.node_id`.
    pub fn sign_join(&self, claims: &JoinClaims) -> String {
        self.sign(JOIN_PREFIX, claims)
    }

    /// Signs enrollment claims into a JWT (`header.claims.signature`, base64url, EdDSA).
    pub fn sign_enrollment(&self, claims: &EnrollmentClaims) -> String {
        let header = JwtHeader {
            alg: "EdDSA".into(),
            typ: "JWT".into(),
            kid: self.node_id.to_string(),
        };
        // Serializing these plain structs cannot fail.
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).unwrap_or_default(), &mut token);
        let sig = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut token);
        token
    }

    fn sign(&self, prefix: &str, claims: &impl Serialize) -> String {
        // Serializing these plain structs (strings, integers, bools) cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = String::with_capacity(prefix.len() + json.len() * 2 + 90);
        token.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let sig = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut token);
        token
    }
}

/// Verifies a session token: shape, signature under the key of its `kid`, and expiry
/// (`exp` must be greater than `now_ms`).
pub fn verify_session(
    token: &str,
    now_ms: i64,
    key_for: impl Fn(u64) -> Option<String>,
) -> Result<SessionClaims, TokenError> {
    let claims: SessionClaims = verify(token, Kind::Session, &key_for, |c: &SessionClaims| c.kid)?;
    if now_ms >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Verifies a join token: shape, signature under the key of its `kid`, and expiry
/// (`exp` must be greater than `now_ms`).
pub fn verify_join(
    token: &str,
    now_ms: i64,
    key_for: impl Fn(u64) -> Option<String>,
) -> Result<JoinClaims, TokenError> {
    let claims: JoinClaims = verify(token, Kind::Join, &key_for, |c: &JoinClaims| c.kid)?;
    if now_ms >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Decodes a join token's claims WITHOUT verifying its signature or expiry.
///
/// A joining node uses this to read the CA fingerprint before it knows any cluster
/// key; nothing read this way may be trusted until the CA has been checked against it
/// and the token verified by the cluster.
pub fn peek_join(token: &str) -> Result<JoinClaims, TokenError> {
    let parts = split(token, Kind::Join)?;
    serde_json::from_slice(&parts.payload).map_err(|_| TokenError::Malformed)
}

/// The parts of an enrollment JWT: its header's `kid`, its claims, the signed text and the
/// signature. Checks the shape only.
fn split_jwt(token: &str) -> Result<(u64, EnrollmentClaims, &str, Signature), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed);
    let header: JwtHeader =
        serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Malformed);
    }
    let kid = header.kid.parse().map_err(|_| TokenError::Malformed)?;
    let claims = serde_json::from_slice(&decode(c)?).map_err(|_| TokenError::Malformed)?;
    let signature = Signature::from_slice(&decode(sig)?).map_err(|_| TokenError::Malformed)?;
    Ok((kid, claims, &token[..h.len() + 1 + c.len()], signature))
}

/// Verifies an enrollment JWT's shape and signature (under the key of its `kid`). Expiry
/// is NOT checked here: the enrollment record decides it, so an expired token is told
/// apart (`ENROLLMENT_EXPIRED`) from a forged one.
pub fn verify_enrollment(
    token: &str,
    key_for: impl Fn(u64) -> Option<String>,
) -> Result<EnrollmentClaims, TokenError> {
    let (kid, claims, signed, signature) = split_jwt(token)?;
    verifying_key(kid, &key_for)?
        .verify_strict(signed.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    Ok(claims)
}

/// Decodes an enrollment JWT's claims WITHOUT verifying it: the enrolling client reads the
/// controller URLs and the CA fingerprint from it, then authenticates the cluster by that
/// fingerprint before it sends the token anywhere.
pub fn peek_enrollment(token: &str) -> Result<EnrollmentClaims, TokenError> {
    split_jwt(token).map(|(_, claims, _, _)| claims)
}

/// The public key registered for signer `kid`.
fn verifying_key(
    kid: u64,
    key_for: &impl Fn(u64) -> Option<String>,
) -> Result<VerifyingKey, TokenError> {
    let key_hex = key_for(kid).ok_or(TokenError::UnknownKey(kid))?;
    let key_bytes: [u8; 32] = hex_decode(&key_hex)
        .and_then(|v| v.try_into().ok())
        .ok_or(TokenError::InvalidKey(kid))?;
    VerifyingKey::from_bytes(&key_bytes).map_err(|_| TokenError::InvalidKey(kid))
}

/// Hashes a password into an argon2id PHC string (random salt, default parameters).
pub fn hash_password(password: &str) -> Result<String, TokenError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| TokenError::Hash(e.to_string()))
}

/// Checks a password against a PHC string; false on mismatch or an unparsable hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Session,
    Join,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Session => SESSION_PREFIX,
            Kind::Join => JOIN_PREFIX,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Join => "join",
        }
    }

    fn other(self) -> Kind {
        match self {
            Kind::Session => Kind::Join,
            Kind::Join => Kind::Session,
        }
    }
}

struct Parts<'a> {
    signed: &'a str,
    payload: Vec<u8>,
    signature: Signature,
}

fn split(token: &str, kind: Kind) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let Some(rest) = token.strip_prefix(kind.prefix()) else {
        if token.starts_with(kind.other().prefix()) {
            return Err(TokenError::WrongKind {
                expected: kind.name(),
            });
        }
        return Err(TokenError::Malformed);
    };
    let (payload_b64, sig_b64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if payload_b64.is_empty() || sig_b64.contains('.') {
        return Err(TokenError::Malformed);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed)?;
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed)?;
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| TokenError::Malformed)?;
    let signed = &token[..kind.prefix().len() + payload_b64.len()];
    Ok(Parts {
        signed,
        payload,
        signature,
    })
}

fn verify<C: DeserializeOwned>(
    token: &str,
    kind: Kind,
    key_for: &impl Fn(u64) -> Option<String>,
    kid_of: impl Fn(&C) -> u64,
) -> Result<C, TokenError> {
    let parts = split(token, kind)?;
    let claims: C = serde_json::from_slice(&parts.payload).map_err(|_| TokenError::Malformed)?;
    let key = verifying_key(kid_of(&claims), key_for)?;
    key.verify_strict(parts.signed.as_bytes(), &parts.signature)
        .map_err(|_| TokenError::BadSignature)?;
    Ok(claims)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), TokenError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp.{}.{:016x}",
        std::process::id(),
        rand::rngs::OsRng.next_u64()
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| -> io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    Ok(result?)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "signing key file is accessible by group/others");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let pairs = s.trim().as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn session(kid: u64) -> SessionClaims {
        SessionClaims {
            sid: "s-1".into(),
            sub: "alice".into(),
            adm: true,
            iat: NOW - 1000,
            exp: NOW + 60_000,
            kid,
        }
    }

    fn join(kid: u64) -> JoinClaims {
        JoinClaims {
            ca: "ab".repeat(32),
            exp: NOW + 60_000,
            kid,
            nonce: "n0nce".into(),
        }
    }

    fn keys(signer: &NodeSigner) -> impl Fn(u64) -> Option<String> + '_ {
        move |kid| (kid == signer.node_id).then(|| signer.public_key_hex())
    }

    #[test]
    fn session_round_trip() {
        let s = NodeSigner::generate(3);
        let token = s.sign_session(&session(3));
        assert!(token.starts_with("wst1."));
        assert_eq!(verify_session(&token, NOW, keys(&s)).unwrap(), session(3));
    }

    #[test]
    fn join_round_trip_and_peek() {
        let s = NodeSigner::generate(5);
        let token = s.sign_join(&join(5));
        assert!(token.starts_with("wjt1."));
        assert_eq!(verify_join(&token, NOW, keys(&s)).unwrap(), join(5));
        assert_eq!(peek_join(&token).unwrap(), join(5));
        // Peeking needs no key and ignores expiry, but not the shape.
        let other = NodeSigner::generate(9);
        let foreign = other.sign_join(&JoinClaims { exp: 0, ..join(9) });
        assert_eq!(peek_join(&foreign).unwrap().exp, 0);
        assert!(matches!(peek_join("wjt1.x"), Err(TokenError::Malformed)));
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let s = NodeSigner::generate(1);
        let token = s.sign_session(&session(1));
        let (_, sig) = token.rsplit_once('.').unwrap();
        let forged_claims = SessionClaims {
            sub: "mallory".into(),
            ..session(1)
        };
        let forged = format!(
            "wst1.{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap())
        );
        assert!(matches!(
            verify_session(&forged, NOW, keys(&s)),
            Err(TokenError::BadSignature)
        ));
        // Flipping a signature character also fails (as bad signature or malformed).
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(verify_session(&flipped, NOW, keys(&s)).is_err());
    }

    #[test]
    fn wrong_key_is_bad_signature() {
        let s = NodeSigner::generate(1);
        let impostor = NodeSigner::generate(1);
        let token = impostor.sign_session(&session(1));
        assert!(matches!(
            verify_session(&token, NOW, keys(&s)),
            Err(TokenError::BadSignature)
        ));
    }

    #[test]
    fn expired_tokens_are_rejected() {
        let s = NodeSigner::generate(1);
        let claims = session(1);
        let token = s.sign_session(&claims);
        assert!(verify_session(&token, claims.exp - 1, keys(&s)).is_ok());
        assert!(matches!(
            verify_session(&token, claims.exp, keys(&s)),
            Err(TokenError::Expired)
        ));
        let j = s.sign_join(&join(1));
        assert!(matches!(
            verify_join(&j, NOW + 60_001, keys(&s)),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn unknown_and_invalid_kid() {
        let s = NodeSigner::generate(1);
        let token = s.sign_session(&session(2));
        assert!(matches!(
            verify_session(&token, NOW, keys(&s)),
            Err(TokenError::UnknownKey(2))
        ));
        assert!(matches!(
            verify_session(&token, NOW, |_| Some("zz".into())),
            Err(TokenError::InvalidKey(2))
        ));
        assert!(matches!(
            verify_session(&token, NOW, |_| Some("00".repeat(31))),
            Err(TokenError::InvalidKey(2))
        ));
    }

    #[test]
    fn session_and_join_tokens_are_not_interchangeable() {
        let s = NodeSigner::generate(1);
        let st = s.sign_session(&session(1));
        let jt = s.sign_join(&join(1));
        assert!(matches!(
            verify_join(&st, NOW, keys(&s)),
            Err(TokenError::WrongKind { expected: "join" })
        ));
        assert!(matches!(
            verify_session(&jt, NOW, keys(&s)),
            Err(TokenError::WrongKind {
                expected: "session"
            })
        ));
        assert!(peek_join(&st).is_err());
        // Relabelling the prefix breaks the signature (or the claim shape).
        let relabelled = format!("wjt1.{}", &st[5..]);
        assert!(verify_join(&relabelled, NOW, keys(&s)).is_err());
        let relabelled = format!("wst1.{}", &jt[5..]);
        assert!(verify_session(&relabelled, NOW, keys(&s)).is_err());
    }

    fn enrollment(kid_signer: &NodeSigner) -> String {
        kid_signer.sign_enrollment(&EnrollmentClaims {
            iss: "https://127.0.0.1:1280".into(),
            sub: "ident1".into(),
            jti: "tok".into(),
            em: "ott".into(),
            exp: 2_000_000_000,
            iat: 1_000_000_000,
            ctrls: vec!["https://127.0.0.1:1280".into()],
            ca_fp: "ab".repeat(32),
        })
    }

    #[test]
    fn enrollment_jwt_round_trip_and_tamper() {
        let signer = NodeSigner::generate(7);
        let jwt = enrollment(&signer);
        assert_eq!(jwt.split('.').count(), 3);
        let claims = verify_enrollment(&jwt, keys(&signer)).unwrap();
        assert_eq!(claims.sub, "ident1");
        assert_eq!(peek_enrollment(&jwt).unwrap(), claims);
        // A standard JWT header: alg EdDSA, kid the node id.
        let header = URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], "7");
        // Changing the subject breaks the signature.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        let mut c: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        c["sub"] = "admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert!(matches!(
            verify_enrollment(&parts.join("."), keys(&signer)),
            Err(TokenError::BadSignature)
        ));
        let other = NodeSigner::generate(7);
        assert!(matches!(
            verify_enrollment(&jwt, keys(&other)),
            Err(TokenError::BadSignature)
        ));
        for bad in ["", "a.b", "a.b.c.d", "wst1.x.y", &jwt[1..]] {
            assert!(verify_enrollment(bad, keys(&signer)).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let s = NodeSigner::generate(1);
        let good = s.sign_session(&session(1));
        let (head, _) = good.rsplit_once('.').unwrap();
        let long = format!("wst1.{}", "A".repeat(MAX_TOKEN_LEN));
        let cases = [
            "",
            ".",
            "wst1.",
            "wst1..",
            "wst1.abc",
            "wst1.!!!.???",
            "wst1.e30.AAAA",
            "wst1.e30.",
            "bearer xyz",
            "wst1.e30.AAAA.BBBB",
            "wst1.\u{e9}\u{e9}.AA",
            head,
            long.as_str(),
        ];
        for case in cases {
            assert!(
                matches!(
                    verify_session(case, NOW, keys(&s)),
                    Err(TokenError::Malformed)
                ),
                "{case:?}"
            );
            let j = case.replacen("wst1.", "wjt1.", 1);
            assert!(
                matches!(verify_join(&j, NOW, keys(&s)), Err(TokenError::Malformed)),
                "{j:?}"
            );
            assert!(matches!(peek_join(&j), Err(TokenError::Malformed)), "{j:?}");
        }
        // Valid base64 and signature length but claims that are not JSON of the right shape.
        let sig = URL_SAFE_NO_PAD.encode([0u8; 64]);
        let not_json = format!("wst1.{}.{sig}", URL_SAFE_NO_PAD.encode(b"hello"));
        assert!(matches!(
            verify_session(&not_json, NOW, keys(&s)),
            Err(TokenError::Malformed)
        ));
    }

    #[test]
    fn load_or_create_persists_key_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("node.key");
        let a = NodeSigner::load_or_create(&path, 4).unwrap();
        assert_eq!(fs::read(&path).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let b = NodeSigner::load_or_create(&path, 4).unwrap();
        assert_eq!(a.public_key_hex(), b.public_key_hex());
        assert_eq!(a.public_key_hex().len(), 64);
        let token = a.sign_session(&session(4));
        assert!(verify_session(&token, NOW, keys(&b)).is_ok());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
        assert!(!format!("{a:?}").contains(&hex_encode(&fs::read(&path).unwrap())));
    }

    #[test]
    fn load_or_create_rejects_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            NodeSigner::load_or_create(&path, 1),
            Err(TokenError::CorruptKeyFile { len: 5, .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"short");
        let as_dir = dir.path().join("d");
        fs::create_dir(&as_dir).unwrap();
        assert!(matches!(
            NodeSigner::load_or_create(&as_dir, 1),
            Err(TokenError::Io(_))
        ));
    }

    #[test]
    fn password_hash_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!verify_password("correct horse", ""));
        assert_ne!(phc, hash_password("correct horse").unwrap());
    }

    #[test]
    fn hex_helpers_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex_encode(&bytes), "0001abff");
        assert_eq!(hex_decode("0001ABff").unwrap(), bytes);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("gg").is_none());
    }
}
