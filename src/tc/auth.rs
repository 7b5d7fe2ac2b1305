//! Request signing for the TC API: pure, so it can be pinned against tcex's known answers.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

// What the signature covers, so it is found with the signer.
pub use crate::http::path_and_query;
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
