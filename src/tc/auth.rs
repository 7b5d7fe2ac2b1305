//! Request signing for the TC API: pure, so it can be pinned against tcex's known answers.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// The `Authorization` value for HMAC auth over the exact `path?query` that goes on the wire.
pub fn hmac_authorization(
    access_id: &str,
    secret_key: &Secret,
    path_and_query: &str,
    method: &str,
    timestamp: i64,
) -> String {
    let to_sign = format!("{path_and_query}:{method}:{timestamp}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("TC {access_id}:{sig}")
}

/// `path?query` of an absolute URL exactly as written (no decoding, no re-encoding).
pub fn path_and_query(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| &url[i + 3..]).unwrap_or(url);
    let pq = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/");
    pq.split('#').next().unwrap_or(pq)
}
