//! One tenant's figures, as `Metrics` lists them.

use super::Histogram;

/// One tenant's figures (or, as `Metrics::tenants_other`, the sum over
/// the tenants not listed and those reclaimed while idle).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TenantMetrics {
    /// The tenant, as `Display` printed it when it was first used.
    pub name: String,
    /// Its weight in the fair share.
    pub weight: u32,
    /// Tasks waiting in its queue.
    pub queued: u64,
    /// Cost units running now (a task of cost n counts n).
    pub running: u64,
    /// Tasks offered to it.
    pub submitted: u64,
    /// Tasks it let through to the workers.
    pub dispatched: u64,
    /// Tasks let through that ended (ran, or were discarded).
    pub completed: u64,
    /// Tasks refused because its queue was full.
    pub rejected: u64,
    /// Tasks dropped because its queue was full.
    pub dropped: u64,
    /// Times its next task had to wait for its rate limit's refill.
    pub rate_limited: u64,
    /// Time in its queue, accepted → let through.
    pub queue_wait: Histogram,
}

impl TenantMetrics {
    pub(crate) fn new(name: String, weight: u32) -> Self {
        TenantMetrics {
            name,
            weight,
            queued: 0,
            running: 0,
            submitted: 0,
            dispatched: 0,
            completed: 0,
            rejected: 0,
            dropped: 0,
            rate_limited: 0,
            queue_wait: Histogram::empty(),
        }
    }

    /// Adds `other`'s figures into these.
    pub(crate) fn add(&mut self, other: &TenantMetrics) {
        self.queued += other.queued;
        self.running += other.running;
        self.submitted += other.submitted;
        self.dispatched += other.dispatched;
        self.completed += other.completed;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.rate_limited += other.rate_limited;
        self.queue_wait.merge(&other.queue_wait);
    }
}

impl super::Metrics {
    /// The tenants' series of the Prometheus text: one per listed tenant
    /// and one labelled `tenant="(other)"` for the rest.
    pub(crate) fn write_tenants(
        &self,
        prefix: &str,
        pool: &str,
        out: &mut impl std::fmt::Write,
    ) -> std::fmt::Result {
        let rows: Vec<&TenantMetrics> = self
            .tenants
            .iter()
            .chain(self.tenants_other.as_ref())
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        type Get = fn(&TenantMetrics) -> u64;
        let series: [(&str, &str, &str, Get); 8] = [
            (
                "tenant_tasks_queued",
                "gauge",
                "Tasks waiting in the tenant's queue.",
                |t| t.queued,
            ),
            (
                "tenant_running_units",
                "gauge",
                "Cost units of the tenant's tasks running now.",
                |t| t.running,
            ),
            (
                "tenant_tasks_submitted_total",
                "counter",
                "Tasks offered to the tenant.",
                |t| t.submitted,
            ),
            (
                "tenant_tasks_dispatched_total",
                "counter",
                "Tasks the tenant let through to the workers.",
                |t| t.dispatched,
            ),
            (
                "tenant_tasks_completed_total",
                "counter",
                "Tasks let through that ended.",
                |t| t.completed,
            ),
            (
                "tenant_tasks_rejected_total",
                "counter",
                "Tasks refused: the tenant's queue was full or its rate limit empty.",
                |t| t.rejected,
            ),
            (
                "tenant_tasks_dropped_total",
                "counter",
                "Tasks dropped from the tenant's full queue.",
                |t| t.dropped,
            ),
            (
                "tenant_rate_limited_total",
                "counter",
                "Times the tenant waited for its rate limit's refill.",
                |t| t.rate_limited,
            ),
        ];
        for (name, kind, help, get) in series {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} {kind}")?;
            for t in &rows {
                let tenant = escape(&t.name);
                writeln!(
                    out,
                    "{prefix}_{name}{{pool=\"{pool}\",tenant=\"{tenant}\"}} {}",
                    get(t)
                )?;
            }
        }
        let name = "tenant_queue_wait_seconds";
        writeln!(
            out,
            "# HELP {prefix}_{name} Time in the tenant's queue, accepted to let through."
        )?;
        writeln!(out, "# TYPE {prefix}_{name} histogram")?;
        for t in &rows {
            let tenant = escape(&t.name);
            let labels = format!("pool=\"{pool}\",tenant=\"{tenant}\"");
            for (bound, count) in t.queue_wait.octave_buckets() {
                writeln!(
                    out,
                    "{prefix}_{name}_bucket{{{labels},le=\"{:e}\"}} {count}",
                    bound.as_secs_f64()
                )?;
            }
            let n = t.queue_wait.count();
            writeln!(out, "{prefix}_{name}_bucket{{{labels},le=\"+Inf\"}} {n}")?;
            writeln!(
                out,
                "{prefix}_{name}_sum{{{labels}}} {}",
                t.queue_wait.sum().as_secs_f64()
            )?;
            writeln!(out, "{prefix}_{name}_count{{{labels}}} {n}")?;
        }
        Ok(())
    }
}

/// A label value as the text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
