//! The JetStream backend.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_nats::{ConnectOptions, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tracing::{info, warn};

use crate::transport::{
    ConsumerSpec, Delivery, Inbox, Outgoing, PublishAck, StreamSpec, Transport,
};
use crate::{BusConfig, Error, Headers, MSG_ID};

/// JetStream over one NATS connection (which reconnects by itself).
#[derive(Debug, Clone)]
pub struct NatsTransport {
    js: jetstream::Context,
}

impl NatsTransport {
    /// Connect with `config`, naming the connection `client_name` so the
    /// server's monitoring shows who is who.
    pub async fn connect(config: &BusConfig, client_name: &str) -> Result<Self, Error> {
        let mut opts = ConnectOptions::new()
            .name(client_name)
            .connection_timeout(config.connect_timeout)
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("NATS connected"),
                    async_nats::Event::Disconnected => warn!("NATS disconnected; reconnecting"),
                    other => info!(event = %other, "NATS event"),
                }
            });
        if !config.token.is_empty() {
            opts = opts.token(config.token.expose().to_string());
        }
        if !config.user.is_empty() {
            opts =
                opts.user_and_password(config.user.clone(), config.password.expose().to_string());
        }
        let addrs: Vec<async_nats::ServerAddr> = config
            .url
            .expose()
            .split(',')
            .map(|u| {
                u.trim().parse::<async_nats::ServerAddr>().map_err(|e| {
                    Error::Connect(format!(
                        "bad URL {}: {e}",
                        heimdall_config::check::redact_url(u)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| Error::Connect(format!("{}: {e}", config.url)))?;
        Ok(NatsTransport {
            js: jetstream::new(client),
        })
    }
}

fn to_nats_headers(h: &Headers, msg_id: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in h.iter() {
        map.insert(k, v);
    }
    map.insert(MSG_ID, msg_id);
    map
}

fn from_nats_headers(h: Option<&HeaderMap>) -> Headers {
    let mut out = Headers::new();
    if let Some(h) = h {
        for (k, values) in h.iter() {
            if let Some(v) = values.last() {
                out.insert(k.to_string(), v.as_str());
            }
        }
    }
    out
}

impl Transport for NatsTransport {
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let config = stream::Config {
                name: spec.name.clone(),
                subjects: spec.subjects.clone(),
                max_age: spec.max_age,
                max_bytes: spec.max_bytes,
                max_message_size: spec.max_msg_size,
                max_messages_per_subject: spec.max_msgs_per_subject,
                duplicate_window: spec.duplicate_window,
                num_replicas: spec.replicas,
                storage: if spec.memory {
                    stream::StorageType::Memory
                } else {
                    stream::StorageType::File
                },
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            };
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(|e| Error::Stream {
                    stream: spec.name.clone(),
                    reason: e.to_string(),
                })?;
            Ok(())
        })
    }

    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<PublishAck, Error>> {
        Box::pin(async move {
            let err = |e: &dyn std::fmt::Display| Error::Publish {
                subject: msg.subject.clone(),
                reason: e.to_string(),
            };
            let headers = to_nats_headers(&msg.headers, &msg.msg_id);
            let ack = self
                .js
                .publish_with_headers(msg.subject.clone(), headers, msg.payload.clone())
                .await
                .map_err(|e| err(&e))?
                .await
                .map_err(|e| err(&e))?;
            Ok(PublishAck {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            })
        })
    }

    fn consumer(&self, spec: ConsumerSpec) -> BoxFuture<'_, Result<Box<dyn Inbox>, Error>> {
        Box::pin(async move {
            let err = |e: &dyn std::fmt::Display| Error::Consumer {
                stream: spec.stream.clone(),
                consumer: spec.durable.clone(),
                reason: e.to_string(),
            };
            let stream = self
                .js
                .get_stream(&spec.stream)
                .await
                .map_err(|e| err(&e))?;
            let config = pull_config(
                &spec,
                if spec.latest {
                    consumer::DeliverPolicy::LastPerSubject
                } else {
                    consumer::DeliverPolicy::All
                },
            );
            if spec.latest {
                // Read the current state again: a fresh consumer each bind.
                let _ = stream.delete_consumer(&spec.durable).await;
            }
            // Create, or update an existing durable to these settings (ack
            // wait, pending limit). A durable whose filter differs is an
            // error: two configurations are fighting over one name.
            let consumer: consumer::PullConsumer = match stream.get_consumer(&spec.durable).await {
                Ok(existing) => {
                    let current: &consumer::Config = &existing.cached_info().config;
                    if current.filter_subject != spec.filter {
                        return Err(err(&format!(
                            "an existing durable consumer filters {}, not {}; use another name or delete it",
                            current.filter_subject, spec.filter
                        )));
                    }
                    if current.ack_wait != spec.ack_wait
                        || current.max_ack_pending != spec.max_ack_pending
                    {
                        stream.create_consumer(config).await.map_err(|e| err(&e))?
                    } else {
                        existing
                    }
                }
                Err(_) => stream.create_consumer(config).await.map_err(|e| err(&e))?,
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(64)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(|e| err(&e))?;
            Ok(Box::new(NatsInbox { messages }) as Box<dyn Inbox>)
        })
    }

    fn rewind(&self, spec: ConsumerSpec, start: u64) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let err = |e: &dyn std::fmt::Display| Error::Consumer {
                stream: spec.stream.clone(),
                consumer: spec.durable.clone(),
                reason: e.to_string(),
            };
            let mut stream = self
                .js
                .get_stream(&spec.stream)
                .await
                .map_err(|e| err(&e))?;
            let state = stream.info().await.map_err(|e| err(&e))?.state.clone();
            let first = state.first_sequence.max(1);
            let from = if start > state.last_sequence + 1 {
                first
            } else {
                start.max(first)
            };
            match stream.delete_consumer(&spec.durable).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(err(&e)),
            }
            stream
                .create_consumer(pull_config(
                    &spec,
                    consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                ))
                .await
                .map_err(|e| err(&e))?;
            Ok(from)
        })
    }

    fn delete_stream(&self, stream: String) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            match self.js.delete_stream(&stream).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("not found") => Ok(()),
                Err(e) => Err(Error::Stream {
                    stream,
                    reason: e.to_string(),
                }),
            }
        })
    }

    fn stream_len(&self, stream: String) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let mut s = self
                .js
                .get_stream(&stream)
                .await
                .map_err(|e| Error::Stream {
                    stream: stream.clone(),
                    reason: e.to_string(),
                })?;
            let info = s.info().await.map_err(|e| Error::Stream {
                stream: stream.clone(),
                reason: e.to_string(),
            })?;
            Ok(info.state.messages)
        })
    }
}

/// The JetStream settings of `spec`, starting where `deliver` says.
fn pull_config(spec: &ConsumerSpec, deliver: consumer::DeliverPolicy) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject: spec.filter.clone(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        max_ack_pending: spec.max_ack_pending,
        max_deliver: spec.max_deliver,
        deliver_policy: deliver,
        ..Default::default()
    }
}

struct NatsInbox {
    messages: consumer::pull::Stream,
}

impl Inbox for NatsInbox {
    fn next(&mut self) -> BoxFuture<'_, Result<Box<dyn Delivery>, Error>> {
        Box::pin(async move {
            match self.messages.next().await {
                Some(Ok(message)) => {
                    let (delivered, sequence) = message
                        .info()
                        .map(|i| (i.delivered.max(1) as u64, i.stream_sequence))
                        .unwrap_or((1, 0));
                    let headers = from_nats_headers(message.headers.as_ref());
                    Ok(Box::new(NatsDelivery {
                        headers,
                        delivered,
                        sequence,
                        message,
                    }) as Box<dyn Delivery>)
                }
                Some(Err(e)) => Err(Error::Delivery(e.to_string())),
                None => Err(Error::Delivery("consumer stream ended".into())),
            }
        })
    }
}

struct NatsDelivery {
    message: jetstream::Message,
    headers: Headers,
    delivered: u64,
    sequence: u64,
}

impl NatsDelivery {
    fn verdict(self: Box<Self>, kind: AckKind) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move {
            // double_ack waits for the server to confirm, so "acknowledged"
            // means the server will not deliver this message again.
            self.message
                .double_ack_with(kind)
                .await
                .map_err(|e| Error::Delivery(format!("ack: {e}")))
        })
    }
}

impl Delivery for NatsDelivery {
    fn subject(&self) -> &str {
        self.message.subject.as_str()
    }
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn payload(&self) -> &Bytes {
        &self.message.payload
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    fn sequence(&self) -> u64 {
        self.sequence
    }
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        self.verdict(AckKind::Ack)
    }
    fn nak(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move {
            self.message
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| Error::Delivery(format!("nak: {e}")))
        })
    }
    fn term(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        self.verdict(AckKind::Term)
    }
}
