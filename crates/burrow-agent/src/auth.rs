//! Access-token checks, user selection from `Authorization: Basic`, and /files signatures.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use burrow_envd::{Code, ConnectError};
use http::HeaderMap;

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
pub const UNAUTHORIZED_MESSAGE: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";
pub const SIGNATURE_EXPIRED_MESSAGE: &str = "signature is already expired";

pub use burrow_envd::signature::{constant_time_eq, file_signature};

/// True when no token is configured or the request carries the right one.
pub fn has_valid_token(expected: Option<&str>, headers: &HeaderMap) -> bool {
    match expected {
        None => true,
        Some(token) => headers
            .get(ACCESS_TOKEN_HEADER)
            .is_some_and(|v| constant_time_eq(v.as_bytes(), token.as_bytes())),
    }
}

/// The user named by `Authorization: Basic base64("user:")`, if any.
pub fn basic_auth_user(headers: &HeaderMap) -> Result<Option<String>, ConnectError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        ConnectError::new(
            Code::Unauthenticated,
            "invalid Authorization header: expected Basic base64(\"<user>:\")",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Err(bad());
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = decoded.split(':').next().unwrap_or_default();
    Ok((!user.is_empty()).then(|| user.to_string()))
}

/// The /files access rule: a valid header token, or a valid unexpired signature.
pub struct FileAccess<'a> {
    pub token: Option<&'a str>,
    pub path: &'a str,
    pub operation: &'a str,
    pub username: &'a str,
    pub signature: Option<&'a str>,
    pub expiration: Option<&'a str>,
}

impl FileAccess<'_> {
    /// Ok, or the exact 401 message E2B sends.
    pub fn check(&self, headers: &HeaderMap, now_unix: i64) -> Result<(), &'static str> {
        let Some(token) = self.token else {
            return Ok(());
        };
        if headers.contains_key(ACCESS_TOKEN_HEADER) {
            return if has_valid_token(Some(token), headers) {
                Ok(())
            } else {
                Err(UNAUTHORIZED_MESSAGE)
            };
        }
        let Some(signature) = self.signature else {
            return Err(UNAUTHORIZED_MESSAGE);
        };
        let expiration = match self.expiration.filter(|e| !e.is_empty()) {
            Some(text) => Some(text.parse::<i64>().map_err(|_| UNAUTHORIZED_MESSAGE)?),
            None => None,
        };
        if expiration.is_some_and(|exp| exp < now_unix) {
            return Err(SIGNATURE_EXPIRED_MESSAGE);
        }
        let expected = file_signature(self.path, self.operation, self.username, token, expiration);
        if constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            Ok(())
        } else {
            Err(UNAUTHORIZED_MESSAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_user_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_auth_user(&h).unwrap(), None);
        h.insert("authorization", "Basic cm9vdDo=".parse().unwrap());
        assert_eq!(basic_auth_user(&h).unwrap().as_deref(), Some("root"));
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_auth_user(&h).unwrap_err().code, Code::Unauthenticated);
    }

    #[test]
    fn signatures() {
        let sig = file_signature("/a", "read", "", "tok", None);
        assert!(sig.starts_with("v1_") && !sig.ends_with('='));
        let h = HeaderMap::new();
        let access = |sig, exp| FileAccess {
            token: Some("tok"),
            path: "/a",
            operation: "read",
            username: "",
            signature: sig,
            expiration: exp,
        };
        assert!(access(Some(&sig), None).check(&h, 0).is_ok());
        assert_eq!(access(None, None).check(&h, 0), Err(UNAUTHORIZED_MESSAGE));
        let timed = file_signature("/a", "read", "", "tok", Some(100));
        assert!(access(Some(&timed), Some("100")).check(&h, 50).is_ok());
        assert_eq!(
            access(Some(&timed), Some("100")).check(&h, 200),
            Err(SIGNATURE_EXPIRED_MESSAGE)
        );
        let write = file_signature("/a", "write", "", "tok", None);
        assert_eq!(
            access(Some(&write), None).check(&h, 0),
            Err(UNAUTHORIZED_MESSAGE)
        );
    }
}
