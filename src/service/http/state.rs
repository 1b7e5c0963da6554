//! What every HTTP handler can reach: the probes, the metrics scrape and the
//! admin API share it.

use std::sync::Arc;

use actix::Addr;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::supervisor::Supervisor;
use crate::amqp::Broker;
use crate::fleet::FleetPicture;
use keyrelay_core::config::Config;
use keyrelay_core::readiness::PoolConsumers;
use keyrelay_core::store::Store;

/// What HTTP handlers can reach.
#[derive(Clone)]
pub struct HttpState {
    pub prometheus: PrometheusHandle,
    pub broker: Arc<Broker>,
    pub supervisor: Addr<Supervisor>,
    pub store: Store,
    pub config: Arc<Config>,
    /// Per pool: keys in rotation and keys consuming (from the supervisor).
    pub pool_consumers: tokio::sync::watch::Receiver<Vec<PoolConsumers>>,
    /// The other instances and who drives each key (from the lease keeper).
    pub fleet: tokio::sync::watch::Receiver<FleetPicture>,
    /// Budgets and this instance's spend against them.
    pub spend: Arc<keyrelay_core::spend::SpendLedger>,
    /// Jobs of each batch this instance holds right now.
    pub batches_running: Arc<crate::pipeline::batch_running::RunningBatches>,
}
