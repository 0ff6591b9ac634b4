//! The proxy phase and its façade: when the consumer goes through a proxy, the run starts the
//! one for its broker and then speaks to it through [`Proxy`], whichever it is. Each consumer
//! instance gets its own listeners, so every connection is attributed by the port it came in
//! on.

use std::sync::Arc;

use super::RunContext;
use crate::consumer::Roster;
use crate::error::Error;
use crate::gate::Gate;
use crate::plan::BrokerKind;
use crate::proxy::amqp::AmqpProxy;
use crate::proxy::control::NetworkControl;
use crate::proxy::kafka::KafkaProxy;
use crate::timeline::DELIVERY_RANGES_SWITCH;

/// The run's proxy, whichever the broker.
#[derive(Clone)]
pub(super) enum Proxy {
    /// The Kafka proxy.
    Kafka(KafkaProxy),
    /// The AMQP proxy.
    Amqp(AmqpProxy),
}

/// Starts the proxy for the plan's broker when the consumer goes through one, with listeners
/// for `capacity` instances; `None` when it connects to the broker directly.
pub(super) async fn start(
    ctx: &RunContext<'_>,
    capacity: u32,
    roster: &Roster,
    gate: &Gate,
) -> Result<Option<Proxy>, Error> {
    if !ctx.plan.via_proxy() {
        return Ok(None);
    }
    let incarnation_of = {
        let roster = roster.clone();
        Arc::new(move |instance: u32| roster.incarnation(instance))
    };
    let (endpoint, timeline) = (ctx.endpoint, ctx.timeline.clone());
    let proxy = match endpoint.kind {
        BrokerKind::Kafka => {
            let proxy = KafkaProxy::start(
                &endpoint.address,
                &endpoint.source,
                capacity,
                timeline,
                gate.clone(),
                incarnation_of,
                ctx.stop.clone(),
            )
            .await?;
            if delivery_ranges() {
                proxy.vouch_with(ctx.acked.clone());
            }
            Proxy::Kafka(proxy)
        }
        BrokerKind::Amqp => Proxy::Amqp(
            AmqpProxy::start(
                &endpoint.address,
                capacity,
                timeline,
                gate.clone(),
                incarnation_of,
                ctx.stop.clone(),
            )
            .await?,
        ),
    };
    Ok(Some(proxy))
}

/// Whether the Kafka proxy may record batches the ledger names as offset ranges: yes unless
/// `EXACTLY_DELIVERY_RANGES=off` (then it reads every record, as before ranges).
fn delivery_ranges() -> bool {
    std::env::var(DELIVERY_RANGES_SWITCH).map_or(true, |v| v != "off")
}

impl Proxy {
    /// What the consumer instance connects to: a bootstrap address or an AMQP URL.
    pub(super) fn address_for(&self, instance: u32) -> String {
        match self {
            Proxy::Kafka(p) => p.bootstrap_for(instance),
            Proxy::Amqp(p) => p.url_for(instance),
        }
    }

    /// The problem that makes the evidence incomplete (a fault it could not apply, a consumer
    /// that slipped past it), once there is one; the proxy put it on the timeline already.
    pub(super) fn failure(&self) -> Option<String> {
        match self {
            Proxy::Kafka(p) => p.failure(),
            Proxy::Amqp(p) => p.failure(),
        }
    }

    /// The real broker addresses ("host:port"): the Kafka bootstrap and every broker node the
    /// proxy learned of, or the AMQP broker's. A consumer socket connected to one of them
    /// bypassed the proxy.
    pub(super) fn broker_addresses(&self) -> Vec<String> {
        match self {
            Proxy::Kafka(p) => p.broker_addresses(),
            Proxy::Amqp(p) => p.broker_addresses(),
        }
    }

    /// Consumer connections still open through the proxy (the AMQP drain waits for none;
    /// the Kafka proxy's are not counted: nothing waits for them).
    pub(super) fn open_connections(&self) -> usize {
        match self {
            Proxy::Kafka(_) => 0,
            Proxy::Amqp(p) => p.open_connections(),
        }
    }

    /// The network lever the nemesis pulls (partition, latency, sever).
    pub(super) fn network(self) -> Arc<dyn NetworkControl> {
        match self {
            Proxy::Kafka(p) => Arc::new(p),
            Proxy::Amqp(p) => Arc::new(p),
        }
    }

    /// Waits for every proxy task to end (after the run's stop token was cancelled).
    pub(super) async fn join(self) {
        match self {
            Proxy::Kafka(p) => p.join().await,
            Proxy::Amqp(p) => p.join().await,
        }
    }
}
