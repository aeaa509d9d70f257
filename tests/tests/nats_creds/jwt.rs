//! NATS JWTs (v2) as `nsc` would write them: a header, the claims and an ed25519 signature
//! by the issuer's nkey, each base64url without padding, joined by dots.

use nkeys::KeyPair;
use serde_json::{json, Value};

/// base64url without padding (RFC 4648 §5), the encoding of JWT parts.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        // One byte gives 2 characters, two give 3, three give 4.
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT about `subject` (a public nkey) issued and signed by `issuer`; `nats` is the
/// type-specific part of the claims, `exp` an expiry in Unix seconds.
fn sign(issuer: &KeyPair, subject: &str, name: &str, nats: Value, exp: Option<u64>) -> String {
    let mut claims = json!({
        "jti": format!("{:032X}", rand::random::<u128>()),
        "iat": now(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = issuer
        .sign(signed.as_bytes())
        .expect("a generated key pair signs");
    format!("{signed}.{}", b64url(&signature))
}

/// The operator's self-signed JWT, naming the system account.
pub fn operator(operator: &KeyPair, system_account: &KeyPair) -> String {
    let nats = json!({
        "type": "operator",
        "version": 2,
        "system_account": system_account.public_key(),
    });
    sign(
        operator,
        &operator.public_key(),
        "jetinfer-test",
        nats,
        None,
    )
}

/// An account signed by `operator`, without limits; `jetstream` enables JetStream for it
/// (unlimited memory and file storage, streams and consumers).
pub fn account(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let js = if jetstream { -1 } else { 0 };
    let nats = json!({
        "type": "account",
        "version": 2,
        "limits": {
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
        },
        "default_permissions": {"pub": {}, "sub": {}},
    });
    sign(operator, &account.public_key(), name, nats, None)
}

/// A user of `account`, allowed everything, expiring at `exp` (Unix seconds) if given.
pub fn user(account: &KeyPair, user: &KeyPair, exp: Option<u64>) -> String {
    let nats = json!({
        "type": "user",
        "version": 2,
        "pub": {}, "sub": {},
        "subs": -1, "data": -1, "payload": -1,
    });
    sign(account, &user.public_key(), "jetinfer", nats, exp)
}

/// A `.creds` file in the format `nsc generate creds` writes.
pub fn creds(user_jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

#[test]
fn base64url_matches_rfc_4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64url(plain.as_bytes()), encoded);
    }
    // The two characters where base64url differs from base64.
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

/// Now, in Unix seconds (JWT times).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
