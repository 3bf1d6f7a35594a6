//! What a source is: the fields of `[[sources]]` and of `POST /admin/v1/sources`, their
//! defaults and their validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::MASK;

/// Longest source name.
const MAX_NAME_LEN: usize = 100;

/// A message-bus source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Which broker.
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// The broker's URL: `nats://[user:password@]host:port` (or `tls://`), or
    /// `amqp[s]://user:password@host:port/vhost`. Shown with the password masked.
    pub url: String,

    /// NATS: the JetStream stream, created (with `subject`) if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// NATS: the consumer's subject filter, e.g. `events.>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// NATS: the durable consumer's name; `hookyard-<name>` when absent. Every gateway process
    /// pulls from the same durable consumer, so the server spreads messages among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// NATS: seconds a pulled message may stay unacknowledged before the server redelivers it
    /// (set when the consumer is created; an existing consumer keeps its own). 30 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait_secs: Option<u64>,
    /// NATS: a `.creds` file (JWT and NKey seed) to authenticate with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub credentials_file: Option<PathBuf>,

    /// AMQP: the queue, declared durable if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// AMQP: unacknowledged messages the broker may push to this process at once; when absent,
    /// enough for the batches committing at once and the one being filled (`batch_size` times
    /// 5, at most 65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<u16>,
    /// AMQP: set as the queue's `x-dead-letter-exchange` when hookyard declares the queue (an
    /// existing queue keeps its own arguments). Poison messages are rejected without requeue and
    /// the broker routes them there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_exchange: Option<String>,

    /// A PEM file of CA certificates to verify the broker's TLS certificate with (NATS: also
    /// requires TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tls_ca_file: Option<PathBuf>,
    /// NATS: a PEM client certificate for mutual TLS (with `tls_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tls_cert_file: Option<PathBuf>,
    /// NATS: the PEM key of `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tls_key_file: Option<PathBuf>,

    /// Where the event type comes from; see [`TypeFrom`].
    #[serde(default)]
    pub type_from: TypeFrom,
    /// With `type_from = "subject"`: leading subject (routing key) segments dropped, so
    /// `events.user.created` with 1 is the type `user.created`.
    #[serde(default)]
    pub skip_segments: usize,
    /// With `type_from = "header"`: the header holding the event type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_header: Option<String>,
    /// A header holding the event id (idempotency key). When absent or missing on a message:
    /// the broker's id (NATS `Nats-Msg-Id`, AMQP `message_id`), else one derived from the
    /// message's identity (see [`crate::source`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_header: Option<String>,

    /// Most messages committed (and acknowledged) together.
    #[serde(default = "default_batch_size")]
    #[schema(default = 500)]
    pub batch_size: usize,
    /// How long a batch waits for more messages after its first, in milliseconds.
    #[serde(default = "default_batch_wait_ms")]
    #[schema(default = 20)]
    pub batch_wait_ms: u64,
    /// Back-pressure: above this many pending deliveries in the store, the source stops pulling
    /// until the queue drains below it (messages wait in the broker; none is dropped).
    #[serde(default = "default_max_queue_depth")]
    #[schema(default = 100000)]
    pub max_queue_depth: u64,
}

fn default_batch_size() -> usize {
    500
}
fn default_batch_wait_ms() -> u64 {
    20
}
fn default_max_queue_depth() -> u64 {
    100_000
}

/// The broker of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A NATS JetStream durable pull consumer.
    Nats,
    /// A RabbitMQ (AMQP 0.9.1) queue.
    Amqp,
}

impl SourceKind {
    /// `nats` or `amqp`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Nats => "nats",
            SourceKind::Amqp => "amqp",
        }
    }
}

/// How a message becomes an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeFrom {
    /// The body is the event JSON of `POST /v1/events` (`type`, `data`, `id`?, ...).
    #[default]
    Body,
    /// The type is the subject (NATS) or routing key (AMQP) less `skip_segments` leading
    /// segments; the body is the event's `data`.
    Subject,
    /// The type is the value of the header `type_header`; the body is the event's `data`.
    Header,
}

/// Why a spec was refused: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSource {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidSource {
    InvalidSource {
        field,
        message: message.into(),
    }
}

/// Fields of a spec with whether each is set.
type Fields = [(&'static str, bool)];

/// Whether `s` is a name a broker takes for a stream, consumer or queue without quoting:
/// NATS refuses `.`, `*`, `>` and whitespace in stream and consumer names.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

impl SourceSpec {
    /// The NATS durable consumer's name.
    pub fn durable_name(&self) -> String {
        self.consumer
            .clone()
            .unwrap_or_else(|| format!("hookyard-{}", self.name.replace('.', "_")))
    }

    /// The AMQP prefetch.
    pub fn prefetch_count(&self) -> u16 {
        self.prefetch.unwrap_or_else(|| {
            let in_flight = super::IN_FLIGHT + 1;
            u16::try_from(self.batch_size.saturating_mul(in_flight)).unwrap_or(u16::MAX)
        })
    }

    /// The spec as shown: the URL's password (or NATS token) masked.
    pub fn redacted(&self) -> SourceSpec {
        SourceSpec {
            url: mask_url(&self.url),
            ..self.clone()
        }
    }

    /// Checks what types cannot.
    pub fn validate(&self) -> Result<(), InvalidSource> {
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "name",
                format!("1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"),
            ));
        }
        if self.url.contains(MASK) || self.url.contains(&mask_url_marker()) {
            return Err(invalid(
                "url",
                "the URL holds a masked password: send the real one",
            ));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| invalid("url", format!("not a URL: {e}")))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("url", "the URL names no host"));
        }
        let schemes: &[&str] = match self.kind {
            SourceKind::Nats => &["nats", "tls"],
            SourceKind::Amqp => &["amqp", "amqps"],
        };
        if !schemes.contains(&url.scheme()) {
            return Err(invalid(
                "url",
                format!(
                    "a {} source's URL starts with {}://",
                    self.kind.as_str(),
                    schemes.join(":// or ")
                ),
            ));
        }
        // Fields of the other broker are refused, not ignored: they would silently do nothing.
        let (required, foreign): (&Fields, &Fields) = match self.kind {
            SourceKind::Nats => (
                &[
                    ("stream", self.stream.is_some()),
                    ("subject", self.subject.is_some()),
                ],
                &[
                    ("queue", self.queue.is_some()),
                    ("prefetch", self.prefetch.is_some()),
                    ("dead_letter_exchange", self.dead_letter_exchange.is_some()),
                ],
            ),
            SourceKind::Amqp => (
                &[("queue", self.queue.is_some())],
                &[
                    ("stream", self.stream.is_some()),
                    ("subject", self.subject.is_some()),
                    ("consumer", self.consumer.is_some()),
                    ("ack_wait_secs", self.ack_wait_secs.is_some()),
                    ("credentials_file", self.credentials_file.is_some()),
                    ("tls_cert_file", self.tls_cert_file.is_some()),
                    ("tls_key_file", self.tls_key_file.is_some()),
                ],
            ),
        };
        for &(field, set) in required {
            if !set {
                return Err(invalid(
                    field,
                    format!("required for a {} source", self.kind.as_str()),
                ));
            }
        }
        for &(field, set) in foreign {
            if set {
                return Err(invalid(
                    field,
                    format!("not a setting of a {} source", self.kind.as_str()),
                ));
            }
        }
        for (field, value) in [
            ("stream", &self.stream),
            ("consumer", &self.consumer),
            ("dead_letter_exchange", &self.dead_letter_exchange),
        ] {
            if value.as_deref().is_some_and(|v| !plain_name(v)) {
                return Err(invalid(field, "letters, digits, '-' and '_' only"));
            }
        }
        if let Some(subject) = &self.subject {
            if subject.is_empty() || subject.contains(char::is_whitespace) {
                return Err(invalid("subject", "a NATS subject without whitespace"));
            }
        }
        if let Some(queue) = &self.queue {
            if queue.is_empty() || queue.len() > 255 {
                return Err(invalid("queue", "1 to 255 characters"));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        match self.type_from {
            TypeFrom::Header if self.type_header.as_deref().is_none_or(str::is_empty) => {
                return Err(invalid(
                    "type_header",
                    "required with type_from = \"header\"",
                ));
            }
            TypeFrom::Body | TypeFrom::Header if self.skip_segments > 0 => {
                return Err(invalid(
                    "skip_segments",
                    "only used with type_from = \"subject\"",
                ));
            }
            _ => {}
        }
        if self.type_header.is_some() && self.type_from != TypeFrom::Header {
            return Err(invalid(
                "type_header",
                "only used with type_from = \"header\"",
            ));
        }
        if self.id_header.as_deref() == Some("") {
            return Err(invalid("id_header", "empty header name"));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(invalid("batch_size", "1 to 10000"));
        }
        if self.batch_wait_ms > 10_000 {
            return Err(invalid("batch_wait_ms", "at most 10000"));
        }
        if self.max_queue_depth == 0 {
            return Err(invalid("max_queue_depth", "must be positive"));
        }
        if self.ack_wait_secs.is_some_and(|s| !(1..=3600).contains(&s)) {
            return Err(invalid("ack_wait_secs", "1 to 3600"));
        }
        if self.prefetch == Some(0) {
            return Err(invalid("prefetch", "must be positive"));
        }
        self.check_files()
    }

    /// Checks the files the source names, so that a wrong one is an error when the config is
    /// loaded or the source created, naming the field, rather than a failing connection later:
    /// `tls_ca_file` and `tls_cert_file` hold PEM certificates, `tls_key_file` a PEM private
    /// key, `credentials_file` is a readable file.
    pub fn check_files(&self) -> Result<(), InvalidSource> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |field, path: &std::path::Path, e: &dyn std::fmt::Display| {
            invalid(field, format!("{}: {e}", path.display()))
        };
        for (field, path) in [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
        ] {
            let Some(path) = path else { continue };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(field, path, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(field, path, &e))?;
            if certs.is_empty() {
                return Err(bad(field, path, &"no PEM certificate in the file"));
            }
        }
        if let Some(path) = &self.tls_key_file {
            PrivateKeyDer::from_pem_file(path).map_err(|e| bad("tls_key_file", path, &e))?;
        }
        if let Some(path) = &self.credentials_file {
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => return Err(bad("credentials_file", path, &"not a file")),
                Err(e) => return Err(bad("credentials_file", path, &e)),
            }
        }
        Ok(())
    }
}

/// The mask as it reads inside a URL (percent-encoded where the URL syntax needs it).
fn mask_url_marker() -> String {
    reqwest::Url::parse("nats://u@h")
        .ok()
        .and_then(|mut probe| {
            probe.set_password(Some(MASK)).ok()?;
            probe.password().map(str::to_owned)
        })
        .unwrap_or_else(|| MASK.to_owned())
}

/// `url` with its password replaced by the mask; for a NATS URL with a user and no password
/// (the user part is a token there), the user. Anything unparsable is masked whole, since it
/// may hold a secret in a shape this does not know.
///
/// The secrets work adds general URL redaction to `model`; this one is for source URLs only
/// until the two are unified.
pub fn mask_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return MASK.to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(MASK));
    } else if !parsed.username().is_empty() && matches!(parsed.scheme(), "nats" | "tls") {
        let _ = parsed.set_username(MASK);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats() -> SourceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "hr-bus", "type": "nats", "url": "nats://127.0.0.1:4222",
            "stream": "EVENTS", "subject": "events.>"
        }))
        .unwrap()
    }

    fn amqp() -> SourceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "crm", "type": "amqp", "url": "amqp://guest:guest@127.0.0.1:5672/%2f",
            "queue": "hookyard-events"
        }))
        .unwrap()
    }

    #[test]
    fn the_issue_examples_are_valid_with_defaults() {
        let n = nats();
        n.validate().unwrap();
        assert_eq!(n.batch_size, 500);
        assert_eq!(n.durable_name(), "hookyard-hr-bus");
        let a = amqp();
        a.validate().unwrap();
        assert_eq!(a.prefetch_count(), 2500);
    }

    #[test]
    fn fields_of_the_other_broker_and_missing_ones_are_refused() {
        let mut n = nats();
        n.queue = Some("q".into());
        assert_eq!(n.validate().unwrap_err().field, "queue");
        let mut n = nats();
        n.stream = None;
        assert_eq!(n.validate().unwrap_err().field, "stream");
        let mut a = amqp();
        a.subject = Some("x".into());
        assert_eq!(a.validate().unwrap_err().field, "subject");
        let mut a = amqp();
        a.url = "nats://127.0.0.1:4222".into();
        assert_eq!(a.validate().unwrap_err().field, "url");
        let mut n = nats();
        n.stream = Some("A.B".into());
        assert_eq!(n.validate().unwrap_err().field, "stream");
        let mut n = nats();
        n.type_from = TypeFrom::Header;
        assert_eq!(n.validate().unwrap_err().field, "type_header");
        let mut n = nats();
        n.skip_segments = 1;
        assert_eq!(n.validate().unwrap_err().field, "skip_segments");
        let mut n = nats();
        n.batch_size = 0;
        assert_eq!(n.validate().unwrap_err().field, "batch_size");
        let unknown = serde_json::from_value::<SourceSpec>(serde_json::json!({
            "name": "x", "type": "nats", "url": "nats://h", "streem": "S"
        }));
        assert!(unknown.unwrap_err().to_string().contains("streem"));
    }

    #[test]
    fn tls_files_are_checked_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["nats.test".into()]).unwrap();
        let (ca, key, junk) = (
            dir.path().join("ca.pem"),
            dir.path().join("key.pem"),
            dir.path().join("junk.pem"),
        );
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let mut n = nats();
        n.tls_ca_file = Some(ca.clone());
        n.tls_cert_file = Some(ca.clone());
        n.tls_key_file = Some(key.clone());
        n.validate().unwrap();

        let mut bad = n.clone();
        bad.tls_ca_file = Some(junk.clone());
        let e = bad.validate().unwrap_err();
        assert_eq!(e.field, "tls_ca_file");
        assert!(e.message.contains("no PEM certificate"), "{e}");
        bad.tls_ca_file = Some(dir.path().join("missing.pem"));
        let e = bad.validate().unwrap_err();
        assert_eq!(e.field, "tls_ca_file");
        assert!(e.message.contains("missing.pem"), "{e}");
        let mut bad = n.clone();
        bad.tls_key_file = Some(ca.clone());
        assert_eq!(bad.validate().unwrap_err().field, "tls_key_file");
        let mut bad = n.clone();
        bad.credentials_file = Some(dir.path().to_owned());
        assert_eq!(bad.validate().unwrap_err().field, "credentials_file");
        let mut a = amqp();
        a.tls_ca_file = Some(junk);
        assert_eq!(a.validate().unwrap_err().field, "tls_ca_file");

        // A config naming a bad CA file is refused when it is loaded.
        let toml = format!(
            "[[sources]]\nname = \"s\"\ntype = \"amqp\"\nurl = \"amqp://h\"\nqueue = \"q\"\ntls_ca_file = \"{}\"\n",
            dir.path().join("nope.pem").display()
        );
        let e = crate::config::Config::from_layers(Some(("f".into(), toml)), []).unwrap_err();
        assert!(e.to_string().contains("tls_ca_file"), "{e}");
    }

    #[test]
    fn passwords_and_tokens_are_masked() {
        let masked = mask_url("amqp://guest:s3cret@127.0.0.1:5672/%2f");
        assert!(masked.starts_with("amqp://guest:"), "{masked}");
        assert!(masked.ends_with("@127.0.0.1:5672/%2f"), "{masked}");
        assert!(!masked.contains("s3cret"), "{masked}");
        let token = mask_url("nats://t0ken@127.0.0.1:4222");
        assert!(!token.contains("t0ken"), "{token}");
        assert_eq!(mask_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(mask_url("::not a url s3cret"), MASK);
        let mut a = amqp();
        a.url = mask_url(&a.url);
        assert_eq!(a.validate().unwrap_err().field, "url");
    }
}
