//! Keeping secrets out of what is shown: credentials in URLs, and secrets a server echoed back.
//!
//! A URL's credentials are its userinfo and the values of query parameters that are secret by
//! name (`token`, `api_key`, `signature`, ... see [`is_secret_param`]) or because the webhook
//! says so (`secret_query_params`). [`redact_url`] masks them for the API, the Webhook Log and
//! logs; an admin who sends the masked URL back keeps the stored one.
//!
//! A [`Scrubber`] removes secrets from text that came from elsewhere (a token server's error):
//! each secret in every form the gateway sent it in, literal, form-urlencoded (the password
//! grant's body), JSON-escaped, and `base64(id:secret)` of a Basic header, with and without
//! the form-urlencoding RFC 6749 §2.3.1 applies to client credentials.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::model::MASK;

/// Fragments of query parameter names that mark their values as secret.
const SECRET_PARAM_PARTS: &[&str] = &[
    "token",
    "key",
    "secret",
    "signature",
    "password",
    "passwd",
    "auth",
    "credential",
];
/// Whole query parameter names that mark their values as secret.
const SECRET_PARAM_NAMES: &[&str] = &["sig", "pwd", "pass", "code"];

/// Whether a query parameter named `name` carries a secret: by its name, or listed in `extra`
/// (case-insensitive).
pub fn is_secret_param(name: &str, extra: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_PARAM_PARTS.iter().any(|part| lower.contains(part))
        || SECRET_PARAM_NAMES.contains(&lower.as_str())
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// `url` with its userinfo and secret query values replaced by [`MASK`]. A URL without
/// credentials is returned unchanged, byte for byte; one that does not parse is shown as
/// `(invalid url)` (it cannot be told what is secret in it).
pub fn redact_url(url: &str, secret_params: &[String]) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "(invalid url)".to_owned();
    };
    let mut changed = false;
    if !parsed.username().is_empty() {
        changed |= parsed.set_username(MASK).is_ok();
    }
    if parsed.password().is_some() {
        changed |= parsed.set_password(Some(MASK)).is_ok();
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        if pairs
            .iter()
            .any(|(k, v)| is_secret_param(k, secret_params) && v != MASK)
        {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                let shown = if is_secret_param(k, secret_params) {
                    MASK
                } else {
                    v
                };
                query.append_pair(k, shown);
            }
            parsed.set_query(Some(&query.finish()));
            changed = true;
        }
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Whether `url` holds credentials [`redact_url`] would mask.
pub fn url_has_secrets(url: &str, secret_params: &[String]) -> bool {
    redact_url(url, secret_params) != url
}

/// Removes known secrets, in every encoding they were sent in, from text.
#[derive(Default, Clone)]
pub struct Scrubber {
    /// Every form of every secret, longest first (so a longer form is not cut by a shorter one).
    patterns: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

/// Passes over a text before giving up and masking it whole (only a secret that overlaps the
/// mask itself could need more than one).
const MAX_PASSES: usize = 4;

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Scrubber {
    /// A scrubber of nothing.
    pub fn new() -> Scrubber {
        Scrubber::default()
    }

    fn push(&mut self, pattern: String) {
        if !pattern.is_empty() && !self.patterns.contains(&pattern) {
            self.patterns.push(pattern);
            self.patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        }
    }

    /// Scrubs `secret` as sent literally, form-urlencoded or in a JSON string.
    pub fn secret(mut self, secret: &str) -> Scrubber {
        if secret.is_empty() {
            return self;
        }
        self.push(secret.to_owned());
        self.push(form_encode(secret));
        if let Ok(json) = serde_json::to_string(secret) {
            self.push(json[1..json.len() - 1].to_owned());
        }
        self
    }

    /// Scrubs a Basic credential pair: `secret` itself and `base64(user:secret)`, plain and with
    /// both parts form-urlencoded (how OAuth2 clients send client credentials).
    pub fn basic(self, user: &str, secret: &str) -> Scrubber {
        let mut this = self.secret(secret);
        if secret.is_empty() {
            return this;
        }
        this.push(STANDARD.encode(format!("{user}:{secret}")));
        this.push(STANDARD.encode(format!("{}:{}", form_encode(user), form_encode(secret))));
        this
    }

    /// `text` without any of the secrets.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for _ in 0..MAX_PASSES {
            let mut found = false;
            for pattern in &self.patterns {
                if text.contains(pattern.as_str()) {
                    found = true;
                    // A secret made of asterisks would reappear inside the mask.
                    let marker = if MASK.contains(pattern.as_str()) {
                        "[redacted]"
                    } else {
                        MASK
                    };
                    text = text.replace(pattern.as_str(), marker);
                }
            }
            if !found {
                return text;
            }
        }
        if self.patterns.iter().any(|p| text.contains(p.as_str())) {
            return "[redacted: the text held a secret]".to_owned();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn url_credentials_are_masked() {
        let none: &[String] = &[];
        assert_eq!(
            redact_url("https://user:pa55@h.example/p?token=abc&x=1", none),
            "https://********:********@h.example/p?token=********&x=1"
        );
        for (url, shown) in [
            (
                "http://h/p?api_key=1&Signature=2&sig=3",
                "http://h/p?api_key=********&Signature=********&sig=********",
            ),
            ("http://h/p?page=2&q=a%20b", "http://h/p?page=2&q=a%20b"),
            ("http://tok@h/", "http://********@h/"),
        ] {
            assert_eq!(redact_url(url, none), shown, "{url}");
        }
        let marked = ["ref".to_owned()];
        assert_eq!(
            redact_url("http://h/?ref=abc&page=1", &marked),
            "http://h/?ref=********&page=1"
        );
        assert!(url_has_secrets("http://h/?REF=abc", &marked));
        assert!(!url_has_secrets("http://h/?page=1", &marked));
        // Masking is idempotent: what is shown comes back unchanged.
        let shown = redact_url("https://u:p@h/?token=t", none);
        assert_eq!(redact_url(&shown, none), shown);
        assert_eq!(redact_url("not a url", none), "(invalid url)");
    }

    #[test]
    fn every_encoding_is_scrubbed() {
        let scrubber = Scrubber::new()
            .secret("p@ss word&1")
            .basic("client id", "s3cr\"et");
        let basic = STANDARD.encode("client id:s3cr\"et");
        let basic_form = STANDARD.encode("client+id:s3cr%22et");
        let echoed = format!(
            "got password=p%40ss+word%261 and \"p@ss word&1\", Authorization: Basic {basic} \
             / Basic {basic_form}, json {{\"secret\":\"s3cr\\\"et\"}}"
        );
        let clean = scrubber.scrub(&echoed);
        for leaked in [
            "p%40ss+word%261",
            "p@ss word&1",
            &basic,
            &basic_form,
            "s3cr",
        ] {
            assert!(!clean.contains(leaked), "{leaked} in {clean}");
        }
        assert!(clean.contains("Authorization: Basic ********"), "{clean}");
        assert_eq!(Scrubber::new().scrub("as is"), "as is");
        assert_eq!(Scrubber::new().secret("**").scrub("a**b"), "a[redacted]b");
    }

    proptest! {
        #[test]
        fn scrubbed_text_never_holds_the_secret(
            secret in "[ -~]{1,24}",
            user in "[ -~]{0,12}",
            before in "[ -~]{0,40}",
            after in "[ -~]{0,40}",
        ) {
            let scrubber = Scrubber::new().basic(&user, &secret);
            let forms = [
                secret.clone(),
                form_encode(&secret),
                STANDARD.encode(format!("{user}:{secret}")),
                STANDARD.encode(format!("{}:{}", form_encode(&user), form_encode(&secret))),
            ];
            let text = format!("{before}{}{after}{}|{}|{}", forms[0], forms[1], forms[2], forms[3]);
            let clean = scrubber.scrub(&text);
            for form in &forms {
                prop_assert!(!clean.contains(form.as_str()), "{form:?} in {clean:?}");
            }
        }
    }
}
