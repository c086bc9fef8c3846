//! Prometheus metrics, served as text at `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ErrorKind;

/// How a turn ended, as a metric label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[repr(usize)]
#[allow(non_camel_case_types)]
pub enum TurnOutcome {
    /// Returned Ok and committed.
    ok,
    /// The handler returned an error (nothing committed).
    error,
    /// Trapped or panicked.
    trap,
    /// Ran past its time limit.
    timeout,
    /// Grew memory past its limit.
    limit_exceeded,
    /// The commit failed.
    store_unavailable,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: TurnOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabel {
    projection: String,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    turns: Family<OutcomeLabel, Counter>,
    /// `turns` resolved per outcome once, so a turn does no label lookup.
    turns_by_outcome: Vec<Counter>,
    turn_seconds: Histogram,
    activations_started: Counter,
    activations_stopped: Counter,
    active: Gauge,
    guest_memory: Gauge,
    host_rss: Gauge,
    memory_budget: Gauge,
    memory_reserved: Gauge,
    /// Activations shed for memory (read by [`crate::memory`]).
    pub(crate) memory_shed: Counter,
    /// Instances refused for want of memory.
    pub(crate) memory_refused: Counter,
    migrations: Counter,
    migrations_failed: Counter,
    migration_seconds: Histogram,
    /// The share of the last window's actor-to-actor calls that crossed hosts.
    remote_call_fraction: Gauge<f64, std::sync::atomic::AtomicU64>,
    locality_moves: Counter,
    commit_batches: Counter,
    commit_turns: Counter,
    commit_failures: Counter,
    commit_seconds: Histogram,
    compiles: Counter,
    compile_cache_hits: Counter,
    events_appended: Counter,
    snapshots: Counter,
    projection_lag: Family<ProjectionLabel, Gauge>,
    jobs_succeeded: Counter,
    job_attempts_failed: Counter,
    job_start_delay_seconds: Histogram,
    messages_delivered: Counter,
    message_deliveries_failed: Counter,
    message_delivery_delay_seconds: Histogram,
    message_lanes_in_flight: Gauge,
    message_lanes_claimed: Counter,
    tells_dropped: Counter,
    mailbox_full: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("quark");
        let turns = Family::<OutcomeLabel, Counter>::default();
        // 10 µs .. ~10 s
        let turn_seconds = Histogram::new(exponential_buckets(0.00001, 2.5, 16));
        let commit_seconds = Histogram::new(exponential_buckets(0.00005, 2.5, 14));
        let outcomes = [
            TurnOutcome::ok,
            TurnOutcome::error,
            TurnOutcome::trap,
            TurnOutcome::timeout,
            TurnOutcome::limit_exceeded,
            TurnOutcome::store_unavailable,
        ];
        let turns_by_outcome = outcomes.iter().map(|&outcome| turns.get_or_create(&OutcomeLabel { outcome }).clone()).collect();
        let m = Metrics {
            turns,
            turns_by_outcome,
            turn_seconds,
            activations_started: Counter::default(),
            activations_stopped: Counter::default(),
            active: Gauge::default(),
            guest_memory: Gauge::default(),
            host_rss: Gauge::default(),
            memory_budget: Gauge::default(),
            memory_reserved: Gauge::default(),
            memory_shed: Counter::default(),
            memory_refused: Counter::default(),
            migrations: Counter::default(),
            migrations_failed: Counter::default(),
            // 100 µs .. ~60 s
            migration_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 15)),
            remote_call_fraction: Gauge::default(),
            locality_moves: Counter::default(),
            commit_batches: Counter::default(),
            commit_turns: Counter::default(),
            commit_failures: Counter::default(),
            commit_seconds,
            compiles: Counter::default(),
            compile_cache_hits: Counter::default(),
            events_appended: Counter::default(),
            snapshots: Counter::default(),
            projection_lag: Family::default(),
            jobs_succeeded: Counter::default(),
            job_attempts_failed: Counter::default(),
            // 0.5 ms .. ~10 min
            job_start_delay_seconds: Histogram::new(exponential_buckets(0.0005, 3.0, 14)),
            messages_delivered: Counter::default(),
            message_deliveries_failed: Counter::default(),
            // 0.5 ms .. ~10 min
            message_delivery_delay_seconds: Histogram::new(exponential_buckets(0.0005, 3.0, 14)),
            message_lanes_in_flight: Gauge::default(),
            message_lanes_claimed: Counter::default(),
            tells_dropped: Counter::default(),
            mailbox_full: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("turns", "Turns run, by outcome", m.turns.clone());
        registry.register("tells_dropped", "Told messages that failed or expired with no one to tell", m.tells_dropped.clone());
        registry.register("mailbox_full", "Messages refused because their actor's mailbox was full", m.mailbox_full.clone());
        registry.register("turn_duration_seconds", "Turn latency including commit", m.turn_seconds.clone());
        registry.register("activations_started", "Actor activations created", m.activations_started.clone());
        registry.register("activations_stopped", "Actor activations removed (idle or failed)", m.activations_stopped.clone());
        registry.register("activations", "Actor activations now in memory", m.active.clone());
        registry.register("guest_memory_bytes", "Linear memory of all activations (what the limiter sees)", m.guest_memory.clone());
        registry.register("host_resident_memory_bytes", "Resident set size of the host process (from the OS)", m.host_rss.clone());
        registry.register("host_memory_budget_bytes", "The memory budget activations reserve against (--memory-budget)", m.memory_budget.clone());
        registry.register("host_memory_reserved_bytes", "Memory reserved by live instances (declared limits, or observed high water with overcommit)", m.memory_reserved.clone());
        registry.register("activations_shed_for_memory", "Idle activations shed to make room in the memory budget", m.memory_shed.clone());
        registry.register("activations_refused_for_memory", "New instances refused with limit-exceeded: no room in the memory budget", m.memory_refused.clone());
        registry.register("actor_migrations", "Activations moved to another host (drained here, directory handed off)", m.migrations.clone());
        registry.register("actor_migrations_failed", "Migrations given up (the drain ran past its limit, or the hand-off was refused); the actor stayed", m.migrations_failed.clone());
        registry.register("actor_migration_duration_seconds", "From a migration's start to its hand-off (the drain included)", m.migration_seconds.clone());
        registry.register(
            "remote_call_fraction",
            "The share of the actor-to-actor calls this host routed in the last window that crossed to another host",
            m.remote_call_fraction.clone(),
        );
        registry.register("locality_moves", "Activations moved by the locality repartitioner (swaps with a peer)", m.locality_moves.clone());
        registry.register("commit_batches", "Group-commit transactions", m.commit_batches.clone());
        registry.register("commit_turns", "Turns committed through group commit", m.commit_turns.clone());
        registry.register("commit_failures", "Group-commit transactions that failed", m.commit_failures.clone());
        registry.register("commit_duration_seconds", "Group-commit transaction latency", m.commit_seconds.clone());
        registry.register("component_compiles", "Components compiled by cranelift", m.compiles.clone());
        registry.register("component_cache_hits", "Components loaded from the on-disk compiled cache", m.compile_cache_hits.clone());
        registry.register("journal_events_appended", "Journal events committed", m.events_appended.clone());
        registry.register("journal_snapshots", "Snapshots of event-sourced actors taken", m.snapshots.clone());
        registry.register("projection_lag_events", "Events a projection has yet to handle", m.projection_lag.clone());
        registry.register("jobs_succeeded", "Job attempts that succeeded (their turn committed)", m.jobs_succeeded.clone());
        registry.register("job_attempts_failed", "Job attempts that failed (retried or dead-lettered)", m.job_attempts_failed.clone());
        registry.register(
            "job_start_delay_seconds",
            "From a job's due time to the start of its attempt (scheduling lag)",
            m.job_start_delay_seconds.clone(),
        );
        registry.register("messages_delivered", "Outbox messages delivered (an actor's turn committed, or a sink took it)", m.messages_delivered.clone());
        registry.register(
            "message_delivery_delay_seconds",
            "From a message's send (in its turn) to its delivery (the receiver's turn committed, or the sink took it)",
            m.message_delivery_delay_seconds.clone(),
        );
        registry.register(
            "message_lanes_in_flight",
            "Outbox lanes (one sender's messages to one destination) this host is delivering",
            m.message_lanes_in_flight.clone(),
        );
        registry.register(
            "message_lanes_claimed",
            "Outbox lanes this host claimed from the store (lanes its own commits opened or added to while it delivered them need no claim)",
            m.message_lanes_claimed.clone(),
        );
        registry.register("message_deliveries_failed", "Outbox deliveries that failed (retried or dead-lettered)", m.message_deliveries_failed.clone());
        Metrics { registry, ..m }
    }

    /// The last window's remote-call fraction (0..=1).
    pub fn set_remote_call_fraction(&self, fraction: f64) {
        self.remote_call_fraction.set(fraction);
    }

    /// Activations the locality repartitioner moved.
    pub fn record_locality_moves(&self, moves: u64) {
        self.locality_moves.inc_by(moves);
    }

    /// Activations the locality repartitioner moved since the host started.
    pub fn locality_moves(&self) -> u64 {
        self.locality_moves.get()
    }

    /// A migration of an activation to another host: moved, or given up.
    pub fn record_migration(&self, moved: bool, took: Duration) {
        if moved {
            self.migrations.inc();
            self.migration_seconds.observe(took.as_secs_f64());
        } else {
            self.migrations_failed.inc();
        }
    }

    /// Activations moved to other hosts since the host started.
    pub fn migrations(&self) -> u64 {
        self.migrations.get()
    }

    /// Records one finished turn.
    pub fn record_turn(&self, outcome: TurnOutcome, elapsed: Duration) {
        self.turns_by_outcome[outcome as usize].inc();
        self.turn_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records one group-commit transaction of `turns` turns.
    pub fn record_commit(&self, turns: usize, elapsed: Duration, ok: bool) {
        self.commit_batches.inc();
        if ok {
            self.commit_turns.inc_by(turns as u64);
        } else {
            self.commit_failures.inc();
        }
        self.commit_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records committed journal events.
    pub fn record_events(&self, count: u64) {
        self.events_appended.inc_by(count);
    }

    /// Records how long after its due time a job attempt started.
    pub fn record_job_start_delay(&self, delay: Duration) {
        self.job_start_delay_seconds.observe(delay.as_secs_f64());
    }

    /// Records how long after its send a message was delivered.
    pub fn record_message_delay(&self, delay: Duration) {
        self.message_delivery_delay_seconds.observe(delay.as_secs_f64());
    }

    /// Records an outbox delivery.
    pub fn record_message(&self, ok: bool) {
        if ok { self.messages_delivered.inc() } else { self.message_deliveries_failed.inc() };
    }

    /// Records a finished job attempt.
    pub fn record_job(&self, ok: bool) {
        if ok { self.jobs_succeeded.inc() } else { self.job_attempts_failed.inc() };
    }

    /// A told message failed or expired: no caller hears of it.
    pub fn record_tell_dropped(&self) {
        self.tells_dropped.inc();
    }

    /// A message was refused: its actor's mailbox was full.
    pub fn record_mailbox_full(&self) {
        self.mailbox_full.inc();
    }

    /// Records a snapshot taken.
    pub fn record_snapshot(&self) {
        self.snapshots.inc();
    }

    /// Sets how many events `projection` has yet to handle.
    pub fn set_projection_lag(&self, projection: &str, lag: u64) {
        self.projection_lag.get_or_create(&ProjectionLabel { projection: projection.to_string() }).set(lag as i64);
    }

    /// Records a component made ready: compiled now, or loaded from the cache.
    pub fn record_component_load(&self, from_cache: bool) {
        if from_cache { self.compile_cache_hits.inc() } else { self.compiles.inc() };
    }

    /// Records an activation starting.
    pub fn activation_started(&self) {
        self.activations_started.inc();
    }

    /// Records an activation ending.
    pub fn activation_stopped(&self) {
        self.activations_stopped.inc();
    }

    /// Sets the point-in-time gauges, just before a scrape.
    pub fn set_gauges(&self, activations: usize, guest_memory: u64, host_rss: u64) {
        self.active.set(activations as i64);
        self.guest_memory.set(guest_memory as i64);
        self.host_rss.set(host_rss as i64);
    }

    /// Sets the memory budget gauges, just before a scrape.
    pub(crate) fn set_memory(&self, budget: &crate::memory::MemoryBudget) {
        self.memory_budget.set(budget.budget() as i64);
        self.memory_reserved.set(budget.reserved() as i64);
    }

    /// Counts outbox lanes claimed from the store.
    pub fn record_lanes_claimed(&self, lanes: usize) {
        self.message_lanes_claimed.inc_by(lanes as u64);
    }

    /// Sets the number of outbox lanes being delivered.
    pub fn set_message_lanes_in_flight(&self, lanes: usize) {
        self.message_lanes_in_flight.set(lanes as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The metric outcome for an error kind.
pub fn outcome_of(kind: ErrorKind) -> TurnOutcome {
    match kind {
        ErrorKind::Timeout => TurnOutcome::timeout,
        ErrorKind::LimitExceeded => TurnOutcome::limit_exceeded,
        ErrorKind::Internal => TurnOutcome::trap,
        ErrorKind::Unavailable | ErrorKind::UnknownOutcome => TurnOutcome::store_unavailable,
        _ => TurnOutcome::error,
    }
}
