//! Raw job parameters exactly as the platform delivers them, before any validation.
//!
//! Three sources, merged in this order (a later source overrides a key of an earlier one):
//! 1. the encrypted param file (`TC_APP_PARAM_FILE` + `TC_APP_PARAM_KEY`), the platform's
//!    current mechanism; it is deleted as soon as it has been read, as tcex does;
//! 2. a plain local JSON file given with `--params FILE` (dry runs, the demo);
//! 3. legacy argv (`--name value`, bare `--flag`, repeated `--name`) from older platforms, which
//!    never send a param file; given explicitly on the command line, it wins.
//!
//! This module only reads them: `&{TC:TEXT:key}` / `&{TC:KEYCHAIN:key}` values are resolved by
//! the ThreatConnect client ([`crate::tc::variables`]), the values validated by [`crate::config`].

use std::collections::BTreeMap;
use std::path::Path;

use aes::cipher::block_padding::Pkcs7;
#[cfg(any(test, feature = "sim"))]
use aes::cipher::BlockEncryptMut;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Parameters by name, values as delivered: strings, lists of strings, booleans (or numbers).
pub type RawParams = BTreeMap<String, Value>;

/// Env var naming the encrypted param file.
pub const PARAM_FILE_ENV: &str = "TC_APP_PARAM_FILE";
/// Env var holding the param file's key.
pub const PARAM_KEY_ENV: &str = "TC_APP_PARAM_KEY";

/// The platform encrypts with a zero IV.
const IV: [u8; 16] = [0u8; 16];

#[cfg(any(test, feature = "sim"))]
type Enc128 = cbc::Encryptor<aes::Aes128>;
#[cfg(any(test, feature = "sim"))]
type Enc192 = cbc::Encryptor<aes::Aes192>;
#[cfg(any(test, feature = "sim"))]
type Enc256 = cbc::Encryptor<aes::Aes256>;
type Dec128 = cbc::Decryptor<aes::Aes128>;
type Dec192 = cbc::Decryptor<aes::Aes192>;
type Dec256 = cbc::Decryptor<aes::Aes256>;

fn key_length_error(len: usize) -> Error {
    Error::ParamFile(format!(
        "{PARAM_KEY_ENV} must be 16, 24 or 32 bytes long, it is {len} bytes"
    ))
}

/// Encrypts a param file exactly as the platform does (AES-CBC, zero IV, PKCS#7, raw bytes),
/// so tests, the demo and the package test produce the platform's files.
#[cfg(any(test, feature = "sim"))]
pub fn encrypt_param_file(key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
    let k = key.as_bytes();
    let out = match k.len() {
        16 => Enc128::new_from_slices(k, &IV).map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plaintext)),
        24 => Enc192::new_from_slices(k, &IV).map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plaintext)),
        32 => Enc256::new_from_slices(k, &IV).map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plaintext)),
        n => return Err(key_length_error(n)),
    };
    out.map_err(|_| key_length_error(k.len()))
}

/// Decrypts a param file's bytes; a wrong key or a damaged file is an error, never a panic.
pub fn decrypt_param_file(key: &Secret, ciphertext: &[u8]) -> Result<Vec<u8>> {
    let k = key.expose().as_bytes();
    let bad = || {
        Error::ParamFile(format!(
            "the param file cannot be decrypted: wrong {PARAM_KEY_ENV} or a damaged file"
        ))
    };
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(Error::ParamFile(format!(
            "the param file is damaged: {} bytes is not a whole number of AES blocks",
            ciphertext.len()
        )));
    }
    let plain =
        match k.len() {
            16 => Dec128::new_from_slices(k, &IV)
                .map(|c| c.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
            24 => Dec192::new_from_slices(k, &IV)
                .map(|c| c.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
            32 => Dec256::new_from_slices(k, &IV)
                .map(|c| c.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
            n => return Err(key_length_error(n)),
        };
    plain
        .map_err(|_| key_length_error(k.len()))?
        .map_err(|_| bad())
}

/// Parses a flat JSON object of params; `source` names the file in errors.
pub fn parse_params_json(bytes: &[u8], source: &str) -> Result<RawParams> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::ParamFile(format!(
            "{source} is not a JSON object of params (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match value {
        Value::Object(map) => Ok(map.into_iter().collect()),
        _ => Err(Error::ParamFile(format!(
            "{source} must hold a JSON object of params"
        ))),
    }
}

/// Reads, deletes, decrypts and parses the platform's param file.
///
/// The file is deleted right after it is read, before decryption, so the secrets it holds do
/// not outlive the read even when the key turns out to be wrong.
pub fn read_param_file(path: &Path, key: &Secret) -> Result<RawParams> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::ParamFile(format!(
            "cannot read the param file {}: {e}",
            path.display()
        ))
    })?;
    std::fs::remove_file(path).map_err(|e| {
        Error::ParamFile(format!(
            "cannot delete the param file {} after reading it: {e}",
            path.display()
        ))
    })?;
    let plain = decrypt_param_file(key, &bytes)?;
    // A wrong key can pad correctly by chance; the JSON check below catches that too.
    parse_params_json(&plain, "the decrypted param file").map_err(|_| {
        Error::ParamFile(format!(
            "the param file cannot be decrypted: wrong {PARAM_KEY_ENV} or a damaged file"
        ))
    })
}

/// Reads the param file named by the environment, if the platform set one.
///
/// `env` looks a variable up (`std::env::var(..).ok()` in the binary), so tests need not touch
/// the process environment. `TC_APP_PARAM_FILE` without `TC_APP_PARAM_KEY` is an error.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<RawParams>> {
    let Some(file) = env(PARAM_FILE_ENV).filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    let key = env(PARAM_KEY_ENV)
        .filter(|k| !k.is_empty())
        .map(Secret::new)
        .ok_or_else(|| {
            Error::ParamFile(format!(
                "{PARAM_FILE_ENV} is set but {PARAM_KEY_ENV} is not"
            ))
        })?;
    read_param_file(Path::new(&file), &key).map(Some)
}

/// Reads a plain local JSON params file (`--params FILE`).
pub fn read_local_json(path: &Path) -> Result<RawParams> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::ParamFile(format!("cannot read {}: {e}", path.display())))?;
    parse_params_json(&bytes, &path.display().to_string())
}

/// Reads a results.tc an earlier run wrote (`key = value` lines) as params, so runs from a
/// shell carry their checkpoint as the platform does; None when the file is not there yet.
pub fn read_results(path: &Path) -> Result<Option<RawParams>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::ParamFile(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut out = RawParams::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(Error::ParamFile(format!(
                "{} line {}: not `key = value`",
                path.display(),
                n + 1
            )));
        };
        out.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
    }
    Ok(Some(out))
}

/// Parses legacy argv params: `--name value`, `--name=value`, a bare `--flag` (followed by
/// another `--` token or nothing) is Boolean true, and a repeated `--name` becomes a list.
pub fn parse_legacy_args(args: &[String]) -> Result<RawParams> {
    let mut out = RawParams::new();
    let mut i = 0;
    while i < args.len() {
        let token = &args[i];
        let Some(body) = token.strip_prefix("--").filter(|b| !b.is_empty()) else {
            return Err(Error::Param(format!(
                "unexpected argument '{token}': params are given as --name value"
            )));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Value::String(v.to_string())),
            None => match args.get(i + 1) {
                Some(next) if !next.starts_with("--") => {
                    i += 1;
                    (body.to_string(), Value::String(next.clone()))
                }
                _ => (body.to_string(), Value::Bool(true)),
            },
        };
        i += 1;
        push_value(&mut out, name, value);
    }
    Ok(out)
}

fn push_value(map: &mut RawParams, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(list)) => list.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// Overlays `over` on `base`: a key present in both takes `over`'s value.
pub fn merge(base: &mut RawParams, over: RawParams) {
    base.extend(over);
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn results_tc_reads_back_as_params_and_a_missing_one_is_nothing_to_carry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.tc");
        assert!(read_results(&path).unwrap().is_none());
        std::fs::write(
            &path,
            "last_modified = 2026-12-01T00:00:00Z\ndeploy_pending = \n\nmanaged_labels = [\"a=b\"]\n",
        )
        .unwrap();
        let p = read_results(&path).unwrap().unwrap();
        assert_eq!(p["last_modified"], "2026-12-01T00:00:00Z");
        assert_eq!(p["deploy_pending"], "");
        assert_eq!(p["managed_labels"], "[\"a=b\"]");
        std::fs::write(&path, "garbage\n").unwrap();
        let e = read_results(&path).unwrap_err().to_string();
        assert!(e.contains("line 1: not `key = value`"), "{e}");
    }

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    /// The param-file vectors computed with tcex 5.0.0 (provenance in
    /// tests/fixtures/tcex/README.md): (key, plaintext, base64 ciphertext).
    fn tcex_vectors() -> Vec<(String, String, String)> {
        let v: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/tcex/known-answer-vectors.json"
        ))
        .unwrap();
        let field = |e: &Value, k: &str| e[k].as_str().unwrap().to_string();
        v["aes_param_file"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    field(e, "key"),
                    field(e, "plaintext"),
                    field(e, "ciphertext_base64"),
                )
            })
            .collect()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn encrypt_matches_tcex_known_answers() {
        let vectors = tcex_vectors();
        assert_eq!(
            vectors.iter().map(|v| v.0.len()).collect::<Vec<_>>(),
            [16, 32],
            "AES-128 and AES-256"
        );
        for (key, plain, cipher) in &vectors {
            let ct = encrypt_param_file(key, plain.as_bytes()).unwrap();
            assert_eq!(&B64.encode(&ct), cipher, "key length {}", key.len());
        }
    }

    #[test]
    fn decrypt_matches_tcex_known_answers() {
        let vectors = tcex_vectors();
        for (key, plain, cipher) in &vectors {
            let ct = B64.decode(cipher).unwrap();
            let pt = decrypt_param_file(&Secret::new(key.as_str()), &ct).unwrap();
            assert_eq!(pt, plain.as_bytes());
        }
        let (key, _, cipher) = &vectors[0];
        let ct = B64.decode(cipher).unwrap();
        let raw = parse_params_json(
            &decrypt_param_file(&Secret::new(key.as_str()), &ct).unwrap(),
            "x",
        )
        .unwrap();
        assert_eq!(raw["tanium_password"], "p@ss \"w0rd\" é");
        assert_eq!(raw["owners"][1], "Another \"Owner\"");
        assert_eq!(raw["verify_ssl"], true);
    }

    #[test]
    fn aes_192_round_trips() {
        let key = "0123456789abcdef01234567";
        let ct = encrypt_param_file(key, b"{\"a\": \"b\"}").unwrap();
        assert_eq!(ct.len(), 16);
        let pt = decrypt_param_file(&Secret::new(key), &ct).unwrap();
        assert_eq!(pt, b"{\"a\": \"b\"}");
    }

    #[test]
    fn wrong_key_bad_length_and_damage_are_clear_errors() {
        let (key, _, cipher) = &tcex_vectors()[0];
        let ct = B64.decode(cipher).unwrap();
        let wrong = Secret::new("ponmlkjihgfedcba");
        let e = decrypt_param_file(&wrong, &ct).unwrap_err().to_string();
        assert!(e.contains("wrong TC_APP_PARAM_KEY"), "{e}");
        assert!(!e.contains("ponmlkjihgfedcba"));
        let e = decrypt_param_file(&Secret::new("short-key"), &ct)
            .unwrap_err()
            .to_string();
        assert!(e.contains("16, 24 or 32 bytes"), "{e}");
        assert!(!e.contains("short-key"));
        let e = decrypt_param_file(&Secret::new(key.as_str()), &ct[..ct.len() - 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("damaged"), "{e}");
        assert!(encrypt_param_file("nope", b"x").is_err());
    }

    #[test]
    fn param_file_is_deleted_after_reading_even_with_a_wrong_key() {
        let (key, plain, _) = &tcex_vectors()[1];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("params.bin");
        std::fs::write(&path, encrypt_param_file(key, plain.as_bytes()).unwrap()).unwrap();
        let env = |k: &str| match k {
            PARAM_FILE_ENV => Some(path.display().to_string()),
            PARAM_KEY_ENV => Some(key.clone()),
            _ => None,
        };
        let raw = from_env(&env).unwrap().unwrap();
        assert_eq!(raw["tql"], "typeName IN (\"Address\")");
        assert!(!path.exists());

        std::fs::write(&path, encrypt_param_file(key, b"{}").unwrap()).unwrap();
        let wrong = |k: &str| match k {
            PARAM_FILE_ENV => Some(path.display().to_string()),
            PARAM_KEY_ENV => Some("ffffffffffffffffffffffffffffffff".to_string()),
            _ => None,
        };
        assert!(matches!(from_env(&wrong), Err(Error::ParamFile(_))));
        assert!(!path.exists());
        let none = |_: &str| None;
        assert!(from_env(&none).unwrap().is_none());
        let no_key = |k: &str| (k == PARAM_FILE_ENV).then(|| "/nonexistent".to_string());
        let e = from_env(&no_key).unwrap_err().to_string();
        assert!(e.contains("TC_APP_PARAM_KEY is not"), "{e}");
    }

    #[test]
    fn legacy_args_flags_values_and_repeats() {
        let raw = parse_legacy_args(&args(&[
            "--tanium_address",
            "tanium.local",
            "--verify_ssl",
            "--owners",
            "A",
            "--owners",
            "B",
            "--owners=C",
            "--tql",
            "x = -1",
            "--flag_at_end",
        ]))
        .unwrap();
        assert_eq!(raw["tanium_address"], "tanium.local");
        assert_eq!(raw["verify_ssl"], true);
        assert_eq!(raw["owners"], serde_json::json!(["A", "B", "C"]));
        assert_eq!(raw["tql"], "x = -1");
        assert_eq!(raw["flag_at_end"], true);
        let e = parse_legacy_args(&args(&["stray"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'stray'"), "{e}");
    }

    #[test]
    fn later_sources_override_earlier_ones() {
        let mut base = parse_params_json(br#"{"a": "file", "b": "file"}"#, "f").unwrap();
        merge(
            &mut base,
            parse_legacy_args(&args(&["--b", "argv"])).unwrap(),
        );
        assert_eq!(base["a"], "file");
        assert_eq!(base["b"], "argv");
        assert!(parse_params_json(b"[1]", "f").is_err());
        let e = parse_params_json(b"{oops", "local.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("local.json"), "{e}");
    }
}
