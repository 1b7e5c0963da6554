//! The shared, thread-safe context a job task runs with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::in_progress::InProgress;
use super::inbound::Inbound;
use super::key_events::KeyEvents;
use super::lease_gate::LeaseGate;
use crate::amqp::Publisher;
use keyrelay_core::config::{JobsConfig, TemplateConfig};
use keyrelay_core::job::{DecodeContext, Job};
use keyrelay_core::keys::{
    Admitted, Allowance, Blocked, Budget, CallTally, Headroom, KeyId, Limits, Ticket, Usage,
};
use keyrelay_core::provider::ProviderClient;
use keyrelay_core::secret::ApiKey;
use keyrelay_core::store::Store;

/// Process-wide services every job task needs.
pub struct Services {
    pub store: Store,
    pub publisher: Publisher,
    pub jobs: JobsConfig,
    pub templates: BTreeMap<String, TemplateConfig>,
    /// Where job tasks report what happened on a key (the supervisor).
    pub events: Arc<dyn KeyEvents>,
    /// Every key of each pool, by pool name: where a job that must leave its
    /// key can go.
    pub pool_keys: BTreeMap<String, Vec<Arc<KeyContext>>>,
    /// Jobs between delivery and ack, process-wide (shutdown waits for 0).
    pub jobs_in_progress: Arc<watch::Sender<usize>>,
    pub in_progress: Arc<InProgress>,
    /// Whether this process's key leases are fresh (see `lease_gate`).
    pub lease: Arc<LeaseGate>,
    /// Budgets and what was spent against them.
    pub spend: Arc<keyrelay_core::spend::SpendLedger>,
    /// Jobs of each batch held right now.
    pub batches_running: Arc<super::batch_running::RunningBatches>,
}

impl Services {
    /// The key `id` of `pool`.
    pub fn key(&self, pool: &str, id: KeyId) -> Option<Arc<KeyContext>> {
        let keys = self.pool_keys.get(pool)?;
        keys.iter().find(|k| k.id == id).cloned()
    }

    /// Count a job as in progress until the guard drops (after its ack).
    pub fn job_started(&self) -> JobGuard {
        self.jobs_in_progress.send_modify(|n| *n += 1);
        JobGuard(self.jobs_in_progress.clone())
    }
}

/// Held by a job from delivery to ack or hand-back.
pub struct JobGuard(Arc<watch::Sender<usize>>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One pool: its queue and the client its keys share.
pub struct PoolContext {
    pub name: String,
    pub queue: String,
    /// Its high-priority jobs' queue.
    pub high_queue: String,
    pub client: ProviderClient,
    /// The wire protocol the pool speaks (what a job may ask of it).
    pub provider: keyrelay_core::provider::ProviderKind,
    pub default_model: String,
    pub models: Option<Vec<String>>,
    pub metrics: keyrelay_core::metrics::PoolMetrics,
    /// Quota day, rate window and default cooldown of the pool's keys.
    pub policy: keyrelay_core::keys::ResetPolicy,
    /// The largest `tpm` a key declares, when every key declares one: a job
    /// estimated above it fails as `too_large` before any call.
    pub max_tpm: Option<u64>,
    /// Whether the job queue is a quorum queue (its delay queues are too).
    pub quorum: bool,
    /// What the pool's models cost.
    pub prices: super::prices::PoolPrices,
    /// What a job finds when the pool is at its budget.
    pub on_budget_exceeded: keyrelay_core::config::OnBudgetExceeded,
}

impl PoolContext {
    /// The delay queue of jobs that failed their `attempt`-th call.
    pub fn delay_queue(&self, attempt: u32) -> String {
        crate::amqp::retry::delay_queue(&self.queue, attempt, self.quorum)
    }

    pub fn decode_context<'a>(&'a self, services: &'a Services) -> DecodeContext<'a> {
        DecodeContext {
            pool: &self.name,
            default_model: &self.default_model,
            models: self.models.as_deref(),
            templates: &services.templates,
            max_body_bytes: services.jobs.max_body_bytes,
            results_queue: &services.jobs.results_queue,
            cache_by_default: services.jobs.cache_by_default,
            provider: Some(self.provider),
        }
    }
}

/// One key. Lives as long as the process, across worker restarts.
pub struct KeyContext {
    pub id: KeyId,
    pub name: String,
    pub pool: Arc<PoolContext>,
    pub secret: ApiKey,
    pub priority: u8,
    pub concurrency: u16,
    pub limits: Limits,
    pub quota_group: Option<String>,
    /// Usage against `limits` in the current windows.
    budget: Mutex<Budget>,
    budget_dirty: AtomicBool,
    probing: AtomicBool,
    /// Whether the supervisor must hear of this key's next success (it has
    /// failures, restarts or a probe to clear); otherwise successes are only
    /// tallied, at no cost to the supervisor.
    report_success: AtomicBool,
    /// Calls since the supervisor last wrote the usage statistics.
    pub calls: CallTally,
    /// Held by the one call allowed while probing.
    pub probe: tokio::sync::Mutex<()>,
    /// `pool/key`, the store's counter prefix.
    pub store_key: String,
    /// Caps provider calls on this key, broker deliveries and reroutes alike.
    pub permits: Semaphore,
    /// One call at a time from the pool's high-priority queue, besides
    /// `permits`: a high job never waits behind the key's backlog.
    pub high_permit: Semaphore,
    in_flight: AtomicUsize,
    available: AtomicBool,
    pub metrics: Arc<keyrelay_core::metrics::KeySeries>,
    /// When the key last answered, and its last failure class (for operators).
    last: Mutex<LastUse>,
    /// Rung when the key gets a new fleet allowance.
    pub allowance_granted: tokio::sync::Notify,
    /// Tokens the largest call waiting for an allowance needs (0: none waits).
    allowance_needed: std::sync::atomic::AtomicU64,
}

/// A key's budget as its owner publishes it to the fleet.
pub struct BudgetSnapshot {
    pub budget: Budget,
    /// Admitted so far, to date the allowance granted with this snapshot.
    pub admitted: Admitted,
    /// What the declared limits allow now.
    pub headroom: Headroom,
    /// What is left of the allowance in force.
    pub allowance_left: Option<Allowance>,
}

/// A key's most recent provider call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LastUse {
    pub used_at: Option<jiff::Timestamp>,
    pub error_class: Option<&'static str>,
    pub error_at: Option<jiff::Timestamp>,
}

/// What a key is configured as.
pub struct KeySpec {
    pub name: String,
    pub secret: ApiKey,
    pub priority: u8,
    pub concurrency: u16,
    pub limits: Limits,
    pub quota_group: Option<String>,
}

impl KeyContext {
    pub fn new(id: KeyId, spec: KeySpec, pool: Arc<PoolContext>) -> KeyContext {
        let metrics = keyrelay_core::metrics::key_series(&pool.name, &spec.name);
        // At 0 from the start, as the pool's counters (`PoolMetrics::new`).
        use keyrelay_core::metrics as m;
        metrics::counter!(m::WORKER_RESTARTS_TOTAL, "pool" => pool.name.clone(), "key" => spec.name.clone())
            .increment(0);
        metrics::gauge!(m::COST_USD_TOTAL, "pool" => pool.name.clone(), "key" => spec.name.clone(), "model" => pool.default_model.clone())
            .increment(0.0);
        KeyContext {
            store_key: format!("{}/{}", pool.name, spec.name),
            id,
            name: spec.name,
            pool,
            secret: spec.secret,
            priority: spec.priority,
            concurrency: spec.concurrency,
            limits: spec.limits,
            quota_group: spec.quota_group,
            budget: Mutex::new(Budget::default()),
            budget_dirty: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            report_success: AtomicBool::new(false),
            calls: CallTally::default(),
            probe: tokio::sync::Mutex::new(()),
            permits: Semaphore::new(usize::from(spec.concurrency)),
            high_permit: Semaphore::new(1),
            in_flight: AtomicUsize::new(0),
            available: AtomicBool::new(true),
            metrics,
            last: Mutex::new(LastUse::default()),
            allowance_granted: tokio::sync::Notify::new(),
            allowance_needed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Admit one call against the key's declared limits (always, when it has none).
    pub fn take_budget(&self, tokens: u64) -> Result<Option<Ticket>, Blocked> {
        let policy = &self.pool.policy;
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        if self.limits.is_unlimited() {
            // Only what the provider's headers said applies.
            return budget
                .learned_block(jiff::Timestamp::now())
                .map_or(Ok(None), Err);
        }
        let window = policy.budget_window();
        let ticket =
            budget.try_take(&self.limits, window, jiff::Timestamp::now(), tokens, |t| {
                policy.next_reset(t)
            })?;
        self.budget_dirty.store(true, Ordering::Release);
        Ok(Some(ticket))
    }

    /// Record a provider call's outcome class.
    pub fn record_use(&self, class: keyrelay_core::provider::OutcomeClass) {
        let now = jiff::Timestamp::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.used_at = Some(now);
        if class != keyrelay_core::provider::OutcomeClass::Success {
            last.error_class = Some(class.as_str());
            last.error_at = Some(now);
        }
    }

    pub fn last_use(&self) -> LastUse {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the key has used of its limits, as of now.
    pub fn usage(&self) -> Usage {
        let policy = &self.pool.policy;
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        budget.usage(policy.budget_window(), jiff::Timestamp::now(), |t| {
            policy.next_reset(t)
        })
    }

    /// The provider's headers say the key has nothing left until `until`.
    pub fn learn_limit(&self, until: jiff::Timestamp) {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        budget.learn(until);
        self.budget_dirty.store(true, Ordering::Release);
    }

    /// Correct an admitted call's token estimate with the provider's count.
    pub fn settle_budget(&self, ticket: Ticket, tokens: u64) {
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        budget.correct(ticket, tokens);
        self.budget_dirty.store(true, Ordering::Release);
    }

    /// The budget, if it changed since the last call (for persisting it).
    /// Have the next save write the budget even if unchanged (it may not
    /// have reached the store).
    pub fn mark_budget_changed(&self) {
        self.budget_dirty.store(true, Ordering::Release);
    }

    pub fn budget_if_changed(&self) -> Option<Budget> {
        if !self.budget_dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(
            self.budget
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// Forget the key's usage (operator reset); persisted with the next save.
    pub fn reset_budget(&self) {
        self.budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reset();
        self.budget_dirty.store(true, Ordering::Release);
    }

    /// Restore a persisted budget (start-up).
    pub fn restore_budget(&self, budget: Budget) {
        *self.budget.lock().unwrap_or_else(PoisonError::into_inner) = budget;
    }

    /// This process starts to drive the key, from `budget` (another
    /// instance's snapshot) or from what it has: no call may go until the
    /// first allowance is granted.
    pub fn begin_lease(&self, budget: Option<Budget>) {
        let mut held = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(budget) = budget {
            *held = budget;
        }
        let admitted = held.admitted();
        held.grant(Allowance::default(), admitted);
        self.budget_dirty.store(true, Ordering::Release);
    }

    /// The budget as of now, for a snapshot.
    pub fn budget_snapshot(&self) -> BudgetSnapshot {
        let policy = &self.pool.policy;
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        let headroom = budget.headroom(
            &self.limits,
            policy.budget_window(),
            jiff::Timestamp::now(),
            |t| policy.next_reset(t),
        );
        BudgetSnapshot {
            budget: budget.clone(),
            admitted: budget.admitted(),
            headroom,
            allowance_left: budget.allowance_left(),
        }
    }

    /// A call of `tokens` waits for an allowance: the next grant covers it.
    pub fn need_allowance(&self, tokens: u64) {
        self.allowance_needed
            .fetch_max(tokens.max(1), Ordering::AcqRel);
    }

    /// Tokens a waiting call needs, if one waits.
    pub fn allowance_needed(&self) -> u64 {
        self.allowance_needed.load(Ordering::Acquire)
    }

    /// The key stops admitting calls at once (its lease is going): out of
    /// rotation, and nothing left of its allowance.
    pub fn stop_admitting(&self) {
        self.set_available(false);
        self.begin_lease(None);
    }

    /// What is left of the fleet allowance, and what was admitted so far.
    pub fn allowance_status(&self) -> (Option<Allowance>, Admitted) {
        let budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        (budget.allowance_left(), budget.admitted())
    }

    /// A snapshot taken when `admitted_then` had been admitted is confirmed:
    /// `allowance` beyond it may go.
    pub fn grant_allowance(&self, allowance: Allowance, admitted_then: Admitted) {
        self.budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .grant(allowance, admitted_then);
        self.allowance_needed.store(0, Ordering::Release);
        self.allowance_granted.notify_waiters();
    }

    /// After a reset the key is probed: one call at a time until one succeeds.
    pub fn is_probing(&self) -> bool {
        self.probing.load(Ordering::Acquire)
    }

    pub(crate) fn set_probing(&self, probing: bool) {
        self.probing.store(probing, Ordering::Release);
    }

    /// Whether a success on this key must go to the supervisor.
    pub fn success_reportable(&self) -> bool {
        self.report_success.load(Ordering::Acquire) || self.is_probing()
    }

    /// Set by the supervisor when a success would change something (clear a
    /// failure streak, a restart backoff or a probe), cleared once it has.
    pub(crate) fn set_report_success(&self, report: bool) {
        self.report_success.store(report, Ordering::Release);
    }

    /// Whether the key is in rotation (set by the supervisor only).
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    pub(crate) fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::Release);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count a job as in flight on this key until the guard drops.
    pub fn track(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.job_started();
        InFlightGuard { key: self.clone() }
    }
}

pub struct InFlightGuard {
    key: Arc<KeyContext>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.key.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.key.metrics.job_ended();
    }
}

/// Where a job's time went: for the latency a producer sees and for
/// keyrelay's own overhead (total minus provider time).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub received: Instant,
    /// In provider calls (all attempts).
    pub provider: Duration,
    /// Making the result durable (sled write and group commit).
    pub store: Duration,
    /// Publishing the reply until the broker's confirm.
    pub reply: Duration,
}

impl Timing {
    pub fn start() -> Timing {
        Timing {
            received: Instant::now(),
            provider: Duration::ZERO,
            store: Duration::ZERO,
            reply: Duration::ZERO,
        }
    }
}

/// A decoded job together with the delivery it came from (its ack handle and
/// the original message, kept for dead-lettering or handing back).
pub struct InFlight {
    pub job: Job,
    pub inbound: Inbound,
    pub guard: JobGuard,
    /// This process is working on the job's id (see `in_progress`).
    pub claim: super::in_progress::Claim,
    /// Provider calls made so far.
    pub attempts: u32,
    pub timing: Timing,
    pub last_error: Option<String>,
    /// The request's response-cache key, when the job may be cached.
    pub cache_key: Option<keyrelay_core::job::CacheKey>,
    /// Counts the job as running in its batch while it is held.
    pub batch_running: Option<super::batch_running::RunningGuard>,
}
