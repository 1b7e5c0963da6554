//! Wiring: opens the store, connects to the broker, declares the topology,
//! starts the supervisor (which starts the key workers) and the HTTP endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::Addr;
use metrics_exporter_prometheus::PrometheusHandle;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::actors::messages::{StopAll, Terminate};
use crate::actors::supervisor::{KeySetup, PoolSetup, Watches};
use crate::actors::supervisor::{Supervisor, SupervisorSetup};
use crate::amqp::{AmqpError, Broker, Publisher};
use crate::fleet::{Fleet, FleetPicture, FleetSetup};
use crate::http::{HttpState, ListenError};
use crate::pipeline::{LeaseGate, PoolContext};
use keyrelay_core::config::Config;
use keyrelay_core::keys::ResetPolicy;
use keyrelay_core::provider::ProviderClient;
use keyrelay_core::provider::client::ProviderError;
use keyrelay_core::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("pool `{pool}`: {source}")]
    Provider { pool: String, source: ProviderError },
    #[error("metrics recorder: {0}")]
    Metrics(String),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Prices(#[from] keyrelay_core::spend::PriceError),
}

/// A running keyrelay.
pub struct App {
    supervisor: Addr<Supervisor>,
    watches: Watches,
    broker: Arc<Broker>,
    store: Store,
    http: actix_web::dev::ServerHandle,
    http_addr: SocketAddr,
    fleet: Fleet,
}

/// The process-wide Prometheus recorder (installed once, shared by every App).
pub fn metrics_handle() -> Result<PrometheusHandle, AppError> {
    // get_or_init runs the installer once even when several Apps start at once.
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| keyrelay_core::metrics::install().map_err(|e| e.to_string()))
        .clone()
        .map_err(AppError::Metrics)
}

impl App {
    /// Start keyrelay. Must run inside an actix System.
    pub async fn start(config: Config) -> Result<App, AppError> {
        // First: a port in use must stop keyrelay before any actor exists.
        let listener = crate::http::bind(config.metrics.listen)?;
        let prometheus = metrics_handle()?;
        // sled's open can wait for its lock (an overlapping restart): off the async threads.
        let path = config.store.path.clone();
        let cache = config.store.cache_mb.saturating_mul(1024 * 1024);
        let on_damage = config.store.on_damage;
        let jobs = config.jobs.clone();
        // The cache index is rebuilt by a scan of the TTL's results: also off
        // the async threads.
        let store = tokio::task::spawn_blocking(move || {
            let store = open_store(&path, cache, on_damage)?;
            load_response_cache(&store, &jobs);
            Ok::<_, StoreError>(store)
        })
        .await
        .map_err(|e| {
            AppError::Store(StoreError::Flush(format!("store open task failed: {e}")))
        })??;
        let prices = Arc::new(crate::pipeline::spend::price_table(&config)?);
        let spend = Arc::new(crate::pipeline::spend::ledger(&config, &store)?);
        let batches_running = Arc::new(crate::pipeline::batch_running::RunningBatches::default());
        let instance = config.instance.resolved_name();
        let broker = Arc::new(Broker::for_service(Arc::new(config.clone()), &instance).await?);
        let publisher = Publisher::new(broker.clone())
            .await?
            .with_confirm_timeout(crate::amqp::SERVICE_CONFIRM_TIMEOUT);
        let gate = Arc::new(LeaseGate::default());
        let (state_changes, state_changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let setup = SupervisorSetup {
            broker: broker.clone(),
            store: store.clone(),
            publisher,
            pools: pool_setups(&config, &instance, &prices)?,
            jobs: config.jobs.clone(),
            templates: config.templates.clone(),
            lease: gate.clone(),
            state_changes,
            spend: spend.clone(),
            batches_running: batches_running.clone(),
        };
        let (supervisor, watches) = Supervisor::launch(setup);
        let config = Arc::new(config);
        // The HTTP endpoint starts before the lease keeper (which announces
        // its address); the keeper fills in this picture of the fleet.
        let (fleet_picture_tx, fleet_picture_rx) = tokio::sync::watch::channel(FleetPicture {
            me: instance.clone(),
            ..FleetPicture::default()
        });
        let state = HttpState {
            prometheus,
            broker: broker.clone(),
            supervisor: supervisor.clone(),
            store: store.clone(),
            config: config.clone(),
            pool_consumers: watches.pools.clone(),
            fleet: fleet_picture_rx,
            spend: spend.clone(),
            batches_running,
        };
        let spend_ledger = spend;
        let (http, http_addr) = crate::http::serve(listener, state)?;
        // Keys are driven from here on, as their leases are taken.
        let fleet = Fleet::launch(
            FleetSetup {
                broker: broker.clone(),
                config: config.clone(),
                instance: instance.clone(),
                http: config.instance.advertised(http_addr),
                keys: watches.keys.clone(),
                supervisor: supervisor.clone(),
                gate,
                state_changes: state_changes_rx,
                spend: spend_ledger,
                store_id: store.id()?,
            },
            fleet_picture_tx,
        );
        info!(pools = config.pools.len(), http = %http_addr, %instance, "keyrelay running");
        Ok(App {
            supervisor,
            watches,
            broker,
            store,
            http,
            http_addr,
            fleet,
        })
    }

    pub fn supervisor(&self) -> &Addr<Supervisor> {
        &self.supervisor
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Wait until exactly `n` keys are consuming (start-up, pause, resume).
    pub async fn wait_for_consumers(&self, n: usize) {
        let mut watch = self.watches.consumers.clone();
        let _ = watch.wait_for(|c| *c == n).await;
    }

    /// Jobs in flight on all keys, as a watch (tests, shutdown).
    pub fn in_flight_watch(&self) -> tokio::sync::watch::Receiver<usize> {
        self.watches.in_flight.clone()
    }

    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stop consuming, let in-flight jobs finish within `deadline`, flush the
    /// store, close the connection. Unfinished jobs are redelivered by the broker
    /// when the connection closes. Every later step is bounded too; `Err` names
    /// the first that ran out, and the caller should then exit without dropping
    /// anything (dropping sled flushes it again, which may be what hung).
    pub async fn shutdown(self, deadline: Duration) -> Result<(), ShutdownStepTimedOut> {
        let mut steps = Steps::default();
        let _ = steps
            .run("stop consuming", self.supervisor.send(StopAll))
            .await;
        let mut in_progress = self.watches.in_flight.clone();
        if tokio::time::timeout(deadline, in_progress.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let left = *in_progress.borrow();
            warn!(
                in_progress = left,
                "shutdown deadline reached; unfinished jobs return to the queue"
            );
        }
        // Keys take no calls now: hand them over with their budgets, so
        // another instance drives them at once (a rolling restart).
        steps
            .run("hand the keys over", self.fleet.leave(HAND_OVER_LIMIT))
            .await;
        let terminated = self.supervisor.send(Terminate);
        let _ = steps.run("stop the key workers", terminated).await;
        self.store
            .save_unsaved_before_exit(Duration::from_secs(5))
            .await;
        if let Some(Err(e)) = steps.run("flush the store", self.store.flush()).await {
            warn!(error = %e, "final store flush failed");
        }
        let closed = steps.run("close the broker connection", self.broker.close());
        if let Some(Err(e)) = closed.await {
            warn!(error = %e, "the broker connection did not close cleanly");
        }
        // Jobs that finished after the deadline counted in memory only.
        if let Some(Err(e)) = steps.run("flush the store again", self.store.flush()).await {
            warn!(error = %e, "last store flush failed");
        } else if let Err(e) = self.store.write_manifest() {
            warn!(error = %e, "cannot write the store manifest");
        }
        steps
            .run("stop the HTTP endpoint", self.http.stop(true))
            .await;
        match steps.first_timed_out {
            None => {
                info!("keyrelay stopped");
                Ok(())
            }
            Some(step) => {
                // Dropping this handle could flush sled, which may be what hung.
                std::mem::forget(self.store);
                Err(ShutdownStepTimedOut { step })
            }
        }
    }
}

/// How long one shutdown step may take before it is given up on.
const SHUTDOWN_STEP_LIMIT: Duration = Duration::from_secs(10);
/// Handing the keys over at shutdown: what is not handed over by then goes
/// with the connection (the next owner assumes its allowance spent).
const HAND_OVER_LIMIT: Duration = Duration::from_secs(8);

/// A shutdown step that did not finish within [`SHUTDOWN_STEP_LIMIT`].
#[derive(Debug, Error)]
#[error("shutdown step `{step}` did not finish within {}s", SHUTDOWN_STEP_LIMIT.as_secs())]
pub struct ShutdownStepTimedOut {
    pub step: &'static str,
}

/// Runs shutdown steps, each bounded, remembering the first that ran out.
#[derive(Default)]
struct Steps {
    first_timed_out: Option<&'static str>,
}

impl Steps {
    /// `None` (and an error line naming the step) if `work` runs out of time.
    async fn run<T>(
        &mut self,
        step: &'static str,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let outcome = tokio::time::timeout(SHUTDOWN_STEP_LIMIT, work).await;
        if outcome.is_err() {
            error!(
                step,
                limit_secs = SHUTDOWN_STEP_LIMIT.as_secs(),
                "shutdown step did not finish; going on without it"
            );
            self.first_timed_out.get_or_insert(step);
        }
        outcome.ok()
    }
}

/// Rebuild the response cache's index from the stored results. A failure
/// only costs cache hits, so it is logged, not fatal.
fn load_response_cache(store: &Store, jobs: &keyrelay_core::config::JobsConfig) {
    let ttl = Duration::from_secs(jobs.cache_ttl_secs);
    match store.load_response_cache(ttl, jobs.cache_max_entries) {
        Ok(0) => {}
        Ok(n) => info!(answers = n, "response cache loaded from the store"),
        Err(e) => warn!(error = %e, "cannot load the response cache; starting with it empty"),
    }
}

/// Open the store; a damaged one is refused, or moved aside when the config
/// says so (the operator chose to start empty and keep the damaged files).
fn open_store(
    path: &std::path::Path,
    cache: u64,
    on_damage: keyrelay_core::config::OnDamage,
) -> Result<Store, StoreError> {
    match Store::open_with_cache(path, cache) {
        Err(StoreError::Damaged { why, .. })
            if on_damage == keyrelay_core::config::OnDamage::MoveAside =>
        {
            let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
            let aside = std::path::PathBuf::from(format!("{}.damaged-{stamp}", path.display()));
            std::fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
                path: aside.clone(),
                source,
            })?;
            warn!(damaged = %aside.display(), %why, "the store was damaged; moved aside, starting with an empty store");
            Store::open_with_cache(path, cache)
        }
        other => other,
    }
}

fn pool_setups(
    config: &Config,
    instance: &str,
    prices: &Arc<keyrelay_core::spend::PriceTable>,
) -> Result<Vec<PoolSetup>, AppError> {
    config
        .pools
        .iter()
        .map(|pool| {
            let mut settings = pool.http_settings(config.jobs.timeouts());
            settings.instance = Some(instance.to_owned());
            let client = ProviderClient::with_options(
                pool.provider,
                Some(&pool.base_url),
                settings,
                &pool.provider_options(),
            )
            .map_err(|source| AppError::Provider {
                pool: pool.name.clone(),
                source,
            })?;
            debug!(pool = %pool.name, http_lanes = client.lanes(), "provider client ready");
            let timezone =
                jiff::tz::TimeZone::get(pool.reset_timezone()).unwrap_or(jiff::tz::TimeZone::UTC);
            Ok(PoolSetup {
                ctx: Arc::new(PoolContext {
                    name: pool.name.clone(),
                    queue: config.job_queue(&pool.name),
                    high_queue: config.high_queue(&pool.name),
                    client,
                    provider: pool.provider,
                    default_model: pool.default_model.clone(),
                    models: pool.models.clone(),
                    max_tpm: pool.largest_declared_tpm(),
                    quorum: config.broker.queue_type == keyrelay_core::config::QueueType::Quorum,
                    metrics: keyrelay_core::metrics::PoolMetrics::new(&pool.name),
                    prices: crate::pipeline::prices::PoolPrices::new(
                        &pool.name,
                        pool.provider,
                        prices.clone(),
                        pool.prices.clone(),
                    ),
                    on_budget_exceeded: pool.on_budget_exceeded,
                    policy: ResetPolicy {
                        timezone,
                        period: pool.quota_period_secs.map(Duration::from_secs),
                        default_cooldown: Duration::from_secs(pool.default_cooldown_secs),
                        window: Duration::from_secs(pool.rate_window_secs.max(1)),
                    },
                }),
                keys: pool
                    .keys
                    .iter()
                    .map(|k| KeySetup {
                        name: k.name.clone(),
                        secret: k.secret.clone(),
                        priority: k.priority,
                        concurrency: k.concurrency,
                        limits: k.limits(),
                        quota_group: k.quota_group.clone(),
                    })
                    .collect(),
            })
        })
        .collect()
}
