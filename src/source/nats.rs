//! NATS JetStream sources: a durable pull consumer with explicit acknowledgements.
//!
//! The stream is created with the source's subject if missing (an existing stream is used as
//! it is); the durable consumer is created if missing, with `AckPolicy::Explicit` so every
//! message is acknowledged on its own, and shared by every gateway process that runs the
//! source: the server hands each pulled message to one of them. A message neither acknowledged
//! nor terminated within the ack wait is redelivered; `max_ack_pending` bounds what is pulled
//! and not yet acknowledged.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_trait::async_trait;

use super::message::Message;
use super::spec::SourceSpec;
use super::{take_batch, Broker, BrokerError};

/// How long a pulled message may stay unacknowledged before the server redelivers it, unless
/// the source says otherwise. Longer than a batch takes to commit under load, short enough that
/// a crashed process's messages come back soon.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Idle heartbeat of the pull stream: a silent connection is noticed after two missed ones.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// A connected consumer.
pub struct NatsBroker {
    client: async_nats::Client,
    consumer: jetstream::consumer::PullConsumer,
    messages: pull::Stream,
    /// `<stream>:<created, ns>`, the stable prefix of derived ids.
    id_prefix: String,
    /// The batch being filled (see [`take_batch`]).
    taken: Vec<jetstream::Message>,
    /// An error met while a batch was being filled, returned by the next call.
    failed: Option<BrokerError>,
}

impl NatsBroker {
    /// Connects, creates the stream and the durable consumer if missing, starts pulling.
    pub async fn connect(spec: &SourceSpec) -> Result<NatsBroker, BrokerError> {
        let (Some(stream_name), Some(subject)) = (&spec.stream, &spec.subject) else {
            return Err(BrokerError(
                "a NATS source needs a stream and a subject".to_owned(),
            ));
        };
        // The error names the server address, never the URL's credentials.
        let client = connect_options(spec)
            .await?
            .connect(spec.url.as_str())
            .await
            .map_err(|e| BrokerError::new("connecting to NATS", e))?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream_name.clone(),
                subjects: vec![subject.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| BrokerError::new(&format!("opening the stream {stream_name}"), e))?;
        let created = stream
            .get_info()
            .await
            .map_err(|e| BrokerError::new("reading the stream's info", e))?
            .created
            .unix_timestamp_nanos();
        let durable = spec.durable_name();
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: spec.ack_wait_secs.map_or(ACK_WAIT, Duration::from_secs),
                    max_ack_pending: i64::try_from(spec.batch_size.saturating_mul(8).max(1000))
                        .unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BrokerError::new(&format!("opening the consumer {durable}"), e))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(spec.batch_size)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| BrokerError::new("pulling from the consumer", e))?;
        Ok(NatsBroker {
            client,
            consumer,
            messages,
            id_prefix: format!("{stream_name}:{created}"),
            taken: Vec::new(),
            failed: None,
        })
    }

    fn message(&self, msg: jetstream::Message) -> Result<Message<jetstream::Message>, BrokerError> {
        let sequence = msg
            .info()
            .map_err(|e| BrokerError::new("a message without JetStream metadata", e))?
            .stream_sequence;
        let headers: Vec<(String, String)> = msg
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, values)| {
                        values
                            .iter()
                            .map(move |v| (k.to_string(), v.as_str().to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let broker_id = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(async_nats::header::NATS_MESSAGE_ID.as_ref()))
            .map(|(_, v)| v.clone());
        Ok(Message {
            subject: msg.subject.to_string(),
            headers,
            body: msg.payload.to_vec(),
            broker_id,
            derived_id: format!("nats:{}:{sequence}", self.id_prefix),
            ack: msg,
        })
    }
}

/// The client's options: the source's name, credentials and TLS files. The files are checked
/// again here, since they may have changed since the source was stored.
async fn connect_options(spec: &SourceSpec) -> Result<async_nats::ConnectOptions, BrokerError> {
    spec.check_files().map_err(|e| BrokerError(e.to_string()))?;
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("hookyard source {}", spec.name))
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = &spec.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| BrokerError::new("reading the credentials file", e))?;
    }
    if let Some(ca) = &spec.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&spec.tls_cert_file, &spec.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

#[async_trait]
impl Broker for NatsBroker {
    type Ack = jetstream::Message;

    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Vec<Message<Self::Ack>>, BrokerError> {
        let messages = take_batch(
            &mut self.messages,
            &mut self.taken,
            &mut self.failed,
            (max, linger, idle),
            "pulling",
        )
        .await?;
        messages.into_iter().map(|m| self.message(m)).collect()
    }

    async fn ack(&mut self, acks: Vec<Self::Ack>) -> Result<(), BrokerError> {
        for msg in &acks {
            msg.ack().await.map_err(|e| BrokerError::new("ack", e))?;
        }
        // One round trip per batch makes sure the acks left this process: fewer redeliveries
        // after a crash (which would be duplicates, not losses).
        self.client
            .flush()
            .await
            .map_err(|e| BrokerError::new("flushing acks", e))
    }

    async fn dead_letter(&mut self, ack: Self::Ack) -> Result<(), BrokerError> {
        ack.ack_with(AckKind::Term)
            .await
            .map_err(|e| BrokerError::new("term", e))
    }

    async fn retry(&mut self, acks: Vec<Self::Ack>) -> Result<(), BrokerError> {
        for msg in &acks {
            msg.ack_with(AckKind::Nak(None))
                .await
                .map_err(|e| BrokerError::new("nak", e))?;
        }
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64, BrokerError> {
        Ok(self
            .consumer
            .get_info()
            .await
            .map_err(|e| BrokerError::new("reading the consumer's info", e))?
            .num_pending)
    }

    async fn close(&mut self) {
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_files_reach_the_client_and_a_bad_one_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["nats.test".into()]).unwrap();
        let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        let spec: SourceSpec = serde_json::from_value(serde_json::json!({
            "name": "hr", "type": "nats", "url": "tls://nats.test:4222", "stream": "S",
            "subject": "s.>", "tls_ca_file": ca, "tls_cert_file": ca, "tls_key_file": key,
        }))
        .unwrap();
        // The options have no getters; their Debug output lists the TLS settings.
        let shown = format!("{:?}", connect_options(&spec).await.unwrap());
        assert!(shown.contains("\"tls_required\": true"), "{shown}");
        assert!(
            shown.contains(&format!("{:?}", ca.display().to_string())),
            "{shown}"
        );
        assert!(shown.contains("key.pem"), "{shown}");
        let plain = SourceSpec {
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            ..spec.clone()
        };
        let shown = format!("{:?}", connect_options(&plain).await.unwrap());
        assert!(shown.contains("\"tls_required\": false"), "{shown}");

        std::fs::write(&ca, "garbage").unwrap();
        let e = connect_options(&spec).await.unwrap_err();
        assert!(
            e.0.contains("tls_ca_file") && e.0.contains("no PEM certificate"),
            "{e}"
        );
    }
}
