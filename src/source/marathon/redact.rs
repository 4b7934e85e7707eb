//! Keeping credentials out of logs, errors, status and `Debug` output.
//!
//! Owns: [`Secret`] (a string whose `Debug`/`Display` print `<redacted>`) and [`redact_url`]
//! (a URL without userinfo, query or fragment, the only form in which a Marathon URL is printed).
//!
//! Must not: log, or hand the secret out except through [`Secret::expose`].

use reqwest::Url;
use std::fmt;

/// A credential. Its only way out is [`Secret::expose`], used where a header is built.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `scheme://host[:port]/path` of `url`: no userinfo, no query, no fragment.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Removes the userinfo from `url` and returns it as `(user, password)`, percent-decoded.
pub fn take_userinfo(url: &mut Url) -> Option<(String, Secret)> {
    let user = url.username().to_string();
    let pass = url.password().map(str::to_string);
    if user.is_empty() && pass.is_none() {
        return None;
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let decode = |s: &str| percent_decode(s);
    Some((
        decode(&user),
        Secret::new(decode(pass.as_deref().unwrap_or(""))),
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_print_without_userinfo_query_or_fragment() {
        let u: Url = "https://alice:hunter2@m1.example:8443/marathon?token=x#f"
            .parse()
            .unwrap();
        let r = redact_url(&u);
        assert_eq!(r, "https://m1.example:8443/marathon");
        assert!(!r.contains("hunter2") && !r.contains("alice"));
    }

    #[test]
    fn userinfo_is_taken_out_and_decoded() {
        let mut u: Url = "http://al%40ice:p%3Ass@m1:8080/".parse().unwrap();
        let (user, pass) = take_userinfo(&mut u).unwrap();
        assert_eq!(user, "al@ice");
        assert_eq!(pass.expose(), "p:ss");
        assert_eq!(u.as_str(), "http://m1:8080/");
        assert!(take_userinfo(&mut u).is_none());
    }
}
