//! Push-mode collection: values the device sends unasked become samples
//! without polling ([`mapper_sdk::DeviceClient::subscribe`]).
//!
//! The subscription has a connection of its own, so notifications never mix
//! with the answers to reads and writes. Its stream ends when that connection
//! does; the SDK then reports the device `offline`, reconnects with backoff
//! and subscribes again.

use std::collections::{HashMap, VecDeque};

use mapper_sdk::{DriverResult, PropertyType, Pushed, Subscription};

use crate::config::{{type_prefix}}Address;
use crate::link::Link;
use crate::protocol;

/// Where a register's pushed values go: `(index into subscribe's addresses,
/// model type)` for every property reading that register.
type Targets = HashMap<String, Vec<(usize, Option<PropertyType>)>>;

/// Subscribes to the registers of the addresses with `subscribe: true`;
/// `Ok(None)` when there are none (polling only).
pub(crate) async fn subscribe(
    host: &str,
    port: u16,
    at: &[&{{type_prefix}}Address],
) -> DriverResult<Option<Subscription>> {
    let mut targets = Targets::new();
    for (index, a) in at.iter().enumerate().filter(|(_, a)| a.subscribe) {
        targets
            .entry(a.register.clone())
            .or_default()
            .push((index, a.model_type));
    }
    if targets.is_empty() {
        return Ok(None);
    }
    let mut registers: Vec<&str> = targets.keys().map(String::as_str).collect();
    registers.sort_unstable();
    let mut link = Link::open(host, port).await?;
    let answer = link
        .exchange(&protocol::subscribe_request(&registers))
        .await?;
    protocol::decode_ok(&answer)?;
    let feed = Feed {
        link,
        targets,
        pending: VecDeque::new(),
    };
    Ok(Some(Subscription {
        stream: Box::pin(futures::stream::unfold(feed, Feed::next)),
        covered: at.iter().map(|a| a.subscribe).collect(),
    }))
}

/// The state of one subscription's stream.
struct Feed {
    link: Link,
    targets: Targets,
    /// Values decoded from the last line, not yet yielded.
    pending: VecDeque<Pushed>,
}

impl Feed {
    /// The next pushed value; `None` ends the stream (the link failed or
    /// broke the protocol: the SDK reconnects).
    async fn next(mut self) -> Option<(Pushed, Self)> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some((p, self));
            }
            let line = match self.link.read_line().await {
                Ok(line) => line,
                Err(e) => {
                    tracing::info!(error = %e, "subscription ended");
                    return None;
                }
            };
            let (register, text) = match protocol::decode_notification(&line) {
                Ok(parts) => parts,
                Err(e) => {
                    tracing::warn!(error = %e, "subscription ended");
                    return None;
                }
            };
            let Some(targets) = self.targets.get(register) else {
                tracing::debug!(register, "value of a register not subscribed; ignored");
                continue;
            };
            for &(index, model_type) in targets {
                self.pending.push_back(Pushed {
                    index,
                    value: protocol::decode_value(register, text, model_type),
                    source_time: None,
                });
            }
        }
    }
}
