//! RabbitMQ (AMQP 0.9.1) sources: a queue consumed with manual acknowledgements and a prefetch.
//!
//! The queue is declared durable if missing (with `x-dead-letter-exchange` when the source
//! names one); every gateway process running the source consumes the same queue, and the
//! broker spreads messages among them. The prefetch bounds the messages pushed to this process
//! and not yet acknowledged. Unacknowledged messages go back to the queue when the channel
//! closes, so a crashed process's messages are redelivered to the others.

use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

use super::message::{content_id, Message};
use super::spec::SourceSpec;
use super::{take_batch, Broker, BrokerError};

/// A connected consumer.
pub struct AmqpBroker {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    queue: String,
    /// The batch being filled (see [`take_batch`]).
    taken: Vec<lapin::message::Delivery>,
    /// An error met while a batch was being filled, returned by the next call.
    failed: Option<BrokerError>,
}

impl AmqpBroker {
    /// Connects, declares the queue if missing, starts consuming.
    pub async fn connect(spec: &SourceSpec) -> Result<AmqpBroker, BrokerError> {
        let Some(queue) = spec.queue.clone() else {
            return Err(BrokerError("an AMQP source needs a queue".to_owned()));
        };
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("hookyard source {}", spec.name).into());
        // lapin's errors name the host, never the URL's password.
        let connection = match tls_config(spec)? {
            Some(tls) => {
                let runtime = lapin::runtime::default_runtime()
                    .map_err(|e| BrokerError::new("starting the AMQP runtime", e))?;
                Connection::connect_with_config(&spec.url, properties, tls, runtime).await
            }
            None => Connection::connect(&spec.url, properties).await,
        }
        .map_err(|e| BrokerError::new("connecting to RabbitMQ", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| BrokerError::new("opening a channel", e))?;
        channel
            .basic_qos(spec.prefetch_count(), BasicQosOptions::default())
            .await
            .map_err(|e| BrokerError::new("setting the prefetch", e))?;
        let mut arguments = FieldTable::default();
        if let Some(exchange) = &spec.dead_letter_exchange {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(exchange.as_str().into()),
            );
        }
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .map_err(|e| BrokerError::new(&format!("declaring the queue {queue}"), e))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("hookyard-{}-{}", spec.name, crate::model::new_id("c")).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::new(&format!("consuming the queue {queue}"), e))?;
        Ok(AmqpBroker {
            connection,
            channel,
            consumer,
            queue,
            taken: Vec::new(),
            failed: None,
        })
    }

    fn message(&self, delivery: lapin::message::Delivery) -> Message<u64> {
        let props = &delivery.properties;
        let headers = props
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(k, v)| {
                        let value = match v {
                            AMQPValue::LongString(s) => {
                                String::from_utf8_lossy(s.as_bytes()).into_owned()
                            }
                            AMQPValue::ShortString(s) => s.as_str().to_owned(),
                            _ => return None,
                        };
                        Some((k.as_str().to_owned(), value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let timestamp = props.timestamp().unwrap_or(0).to_be_bytes();
        let derived_id = content_id(
            &self.queue,
            &[
                delivery.exchange.as_str().as_bytes(),
                delivery.routing_key.as_str().as_bytes(),
                &timestamp,
                &delivery.data,
            ],
        );
        Message {
            subject: delivery.routing_key.as_str().to_owned(),
            headers,
            broker_id: props.message_id().as_ref().map(|id| id.as_str().to_owned()),
            derived_id,
            ack: delivery.delivery_tag,
            body: delivery.data,
        }
    }
}

/// The TLS settings of the connection: the source's CA certificates (none: lapin's defaults,
/// the webpki roots, for an `amqps://` URL). The files are checked again here, since they may
/// have changed since the source was stored.
fn tls_config(spec: &SourceSpec) -> Result<Option<lapin::tcp::OwnedTLSConfig>, BrokerError> {
    spec.check_files().map_err(|e| BrokerError(e.to_string()))?;
    let Some(ca) = &spec.tls_ca_file else {
        return Ok(None);
    };
    let pem =
        std::fs::read_to_string(ca).map_err(|e| BrokerError::new("reading tls_ca_file", e))?;
    Ok(Some(lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: Some(pem),
    }))
}

#[async_trait]
impl Broker for AmqpBroker {
    type Ack = u64;

    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Vec<Message<Self::Ack>>, BrokerError> {
        let deliveries = take_batch(
            &mut self.consumer,
            &mut self.taken,
            &mut self.failed,
            (max, linger, idle),
            "consuming",
        )
        .await?;
        Ok(deliveries.into_iter().map(|d| self.message(d)).collect())
    }

    async fn ack(&mut self, acks: Vec<Self::Ack>) -> Result<(), BrokerError> {
        // One `multiple` ack up to the batch's highest tag. Delivery tags grow per channel, and
        // everything below that tag on this channel is settled: the session settles batches in
        // the order they were taken (earlier ones were acknowledged or handed back before this
        // one), and this batch's poison messages were rejected when it was taken. Later
        // messages, including those of batches still committing, have higher tags.
        let Some(last) = acks.iter().max() else {
            return Ok(());
        };
        self.channel
            .basic_ack(*last, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| BrokerError::new("ack", e))
    }

    async fn dead_letter(&mut self, ack: Self::Ack) -> Result<(), BrokerError> {
        self.channel
            .basic_nack(
                ack,
                BasicNackOptions {
                    multiple: false,
                    requeue: false,
                },
            )
            .await
            .map_err(|e| BrokerError::new("nack", e))
    }

    async fn retry(&mut self, acks: Vec<Self::Ack>) -> Result<(), BrokerError> {
        for tag in acks {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
                .map_err(|e| BrokerError::new("nack", e))?;
        }
        Ok(())
    }

    async fn lag(&mut self) -> Result<u64, BrokerError> {
        let queue = self
            .channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::new("reading the queue's depth", e))?;
        Ok(u64::from(queue.message_count()))
    }

    async fn close(&mut self) {
        let _ = self.connection.close(200, "stopping".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ca: Option<&std::path::Path>) -> SourceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "crm", "type": "amqp", "url": "amqps://u:p@rabbit.test/%2f", "queue": "q",
            "tls_ca_file": ca,
        }))
        .unwrap()
    }

    #[test]
    fn the_ca_file_reaches_the_client_and_a_bad_one_is_a_clear_error() {
        assert!(tls_config(&spec(None)).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["rabbit.test".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let tls = tls_config(&spec(Some(&ca))).unwrap().unwrap();
        assert_eq!(tls.cert_chain.as_deref(), Some(cert.cert.pem().as_str()));
        assert!(tls.identity.is_none());
        // Replaced by something else after the source was stored: refused before connecting.
        std::fs::write(&ca, "garbage").unwrap();
        let e = tls_config(&spec(Some(&ca))).unwrap_err();
        assert!(
            e.0.contains("tls_ca_file") && e.0.contains("no PEM certificate"),
            "{e}"
        );
    }
}
