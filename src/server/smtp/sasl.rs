//! SASL for SMTP AUTH (RFC 4954): decoding client responses for PLAIN
//! (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195), and the CRAM-MD5 digest
//! (HMAC-MD5, RFC 2104). Pure functions; passwords come back as
//! [`Secret`] so they cannot end up in a log or a reply by accident.

use base64::Engine as _;
use md5::{Digest, Md5};

use crate::secret::Secret;

/// The mechanisms the server offers, as EHLO lists them.
pub(super) const MECHANISMS: &str = "PLAIN LOGIN CRAM-MD5";

/// The LOGIN mechanism's prompts, base64 of `Username:` and `Password:`.
pub(super) const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub(super) const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mechanism {
    Plain,
    Login,
    CramMd5,
}

impl Mechanism {
    /// Mechanism names are case-insensitive (RFC 4422).
    pub(super) fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            "CRAM-MD5" => Some(Mechanism::CramMd5),
            _ => None,
        }
    }
}

/// A client's answer to a 334 challenge (or an initial response).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Response {
    /// `*`: the client gives up (RFC 4954: answered 501).
    Cancel,
    /// The decoded octets; `=` stands for an empty initial response.
    Data(Vec<u8>),
}

/// Decodes one response line; `None` when it is not valid base64.
pub(super) fn decode_response(text: &str) -> Option<Response> {
    match text {
        "*" => Some(Response::Cancel),
        "=" => Some(Response::Data(Vec::new())),
        _ => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(Response::Data),
    }
}

/// Base64 of a server challenge.
pub(super) fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// PLAIN's `authzid NUL authcid NUL passwd`: the user and password. An
/// authorization identity other than the user's own is refused, since this
/// server has no proxy rights to grant.
pub(super) fn decode_plain(data: &[u8]) -> Option<(String, Secret)> {
    let mut parts = data.split(|b| *b == 0);
    let (authzid, authcid, passwd) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authcid.is_empty() || (!authzid.is_empty() && authzid != authcid) {
        return None;
    }
    let user = String::from_utf8(authcid.to_vec()).ok()?;
    let password = String::from_utf8(passwd.to_vec()).ok()?;
    Some((user, Secret::new(password)))
}

/// A UTF-8 user name from LOGIN's first response.
pub(super) fn decode_text(data: Vec<u8>) -> Option<String> {
    String::from_utf8(data).ok().filter(|s| !s.is_empty())
}

/// CRAM-MD5's `user SP digest`, the digest 32 hex digits.
pub(super) fn decode_cram(data: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(data).ok()?;
    let (user, digest) = text.rsplit_once(' ')?;
    let hex = digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    (!user.is_empty() && hex).then(|| (user.to_string(), digest.to_ascii_lowercase()))
}

/// Lowercase hex HMAC-MD5 of `message` under `key` (RFC 2104), the digest
/// CRAM-MD5 expects for the challenge.
pub(super) fn hmac_md5_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..16].copy_from_slice(&Md5::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Md5::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    let outer = Md5::new().chain_update(&outer_pad).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_md5_matches_the_rfc_vectors() {
        // RFC 2104 test case 1 and 2.
        assert_eq!(
            hmac_md5_hex(&[0x0b; 16], b"Hi There"),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
        assert_eq!(
            hmac_md5_hex(b"Jefe", b"what do ya want for nothing?"),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        // RFC 2202 test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hmac_md5_hex(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
        );
        // RFC 2195's CRAM-MD5 example.
        assert_eq!(
            hmac_md5_hex(b"tanstaaftanstaaf", b"<1896.697170952@postoffice.reston.mci.net>"),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
    }

    #[test]
    fn responses_decode() {
        assert_eq!(decode_response("*"), Some(Response::Cancel));
        assert_eq!(decode_response("="), Some(Response::Data(Vec::new())));
        assert_eq!(
            decode_response("YWxpY2U="),
            Some(Response::Data(b"alice".to_vec()))
        );
        assert_eq!(decode_response("not base64!"), None);
        assert_eq!(decode_response("YWxpY2U"), None, "padding is required");
        assert_eq!(Mechanism::parse("cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(Mechanism::parse("GSSAPI"), None);
    }

    #[test]
    fn plain_needs_three_fields_and_no_foreign_authzid() {
        let (user, pw) = decode_plain(b"\0alice\0alice-demo-pw").expect("plain");
        assert_eq!((user.as_str(), pw.expose()), ("alice", "alice-demo-pw"));
        assert!(decode_plain(b"alice\0alice\0pw").is_some());
        assert!(decode_plain(b"bob\0alice\0pw").is_none());
        assert!(decode_plain(b"\0alice").is_none());
        assert!(decode_plain(b"\0\0pw").is_none());
        assert!(decode_plain(b"\0alice\0pw\0more").is_none());
        assert!(!format!("{:?}", decode_plain(b"\0alice\0s3cret")).contains("s3cret"));
    }

    #[test]
    fn cram_responses() {
        assert_eq!(
            decode_cram(b"tim b913a602c7eda7a495b4e6e7334d3890"),
            Some(("tim".into(), "b913a602c7eda7a495b4e6e7334d3890".into()))
        );
        assert_eq!(
            decode_cram(b"tim B913A602C7EDA7A495B4E6E7334D3890").map(|c| c.1),
            Some("b913a602c7eda7a495b4e6e7334d3890".into())
        );
        assert!(decode_cram(b"tim b913").is_none());
        assert!(decode_cram(b"b913a602c7eda7a495b4e6e7334d3890").is_none());
        assert!(decode_cram(b" b913a602c7eda7a495b4e6e7334d3890").is_none());
    }
}
