//! The snapshot's exports: Prometheus text, and the `metrics` facade.

use super::snapshot::Metrics;
use std::fmt;

impl Metrics {
    /// The snapshot in the Prometheus text exposition format (0.0.4):
    /// every name starts with `prefix` (as [`prometheus_prefix`] makes it
    /// a valid name), every sample has a `pool` label,
    /// counters end in `_total`, durations are in seconds, and the two
    /// histograms have `_bucket{le=…}` (at octave boundaries), `_sum` and
    /// `_count` series.
    ///
    /// ```
    /// let pool = ebbtide::Pool::builder().name("render").workers(1).build()?;
    /// pool.spawn(|| 1)?.join()?;
    /// pool.wait_idle();
    /// let text = pool.metrics().to_prometheus("ebbtide");
    /// assert!(text.contains("ebbtide_tasks_completed_total{pool=\"render\"} 1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        self.write_prometheus(prefix, &mut out)
            .expect("writing to a String cannot fail");
        out
    }

    /// Writes [`to_prometheus`](Self::to_prometheus)'s text to `out`.
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_prometheus(&self, prefix: &str, out: &mut impl fmt::Write) -> fmt::Result {
        self.write_one(prefix, out)
    }

    /// The snapshots of several pools (each sample with its pool's `pool`
    /// label) as one Prometheus text: each metric's `HELP` and `TYPE` once,
    /// then its samples for every pool, as the format requires.
    ///
    /// ```
    /// let parse = ebbtide::Pool::builder().name("parse").workers(1).build()?;
    /// let write = ebbtide::Pool::builder().name("write").workers(1).build()?;
    /// let mut text = String::new();
    /// ebbtide::metrics::Metrics::write_prometheus_all(
    ///     &[parse.metrics(), write.metrics()],
    ///     "app",
    ///     &mut text,
    /// )?;
    /// assert_eq!(text.matches("# TYPE app_workers gauge").count(), 1);
    /// assert!(text.contains("app_workers{pool=\"parse\"} 1"));
    /// assert!(text.contains("app_workers{pool=\"write\"} 1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Whatever `out` returns.
    pub fn write_prometheus_all(
        snapshots: &[Metrics],
        prefix: &str,
        out: &mut impl fmt::Write,
    ) -> fmt::Result {
        // Each snapshot's own text, cut into families at its HELP lines;
        // then each family once, with the samples of every snapshot.
        let texts: Vec<String> = snapshots.iter().map(|m| m.to_prometheus(prefix)).collect();
        let mut families: Vec<(&str, &str, Vec<&str>)> = Vec::new();
        for text in &texts {
            let mut current: Option<usize> = None;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    let name = rest.split(' ').next().unwrap_or(rest);
                    let at = match families.iter().position(|f| f.0 == name) {
                        Some(i) => i,
                        None => {
                            families.push((name, line, Vec::new()));
                            families.len() - 1
                        }
                    };
                    current = Some(at);
                } else if line.starts_with("# TYPE ") {
                    if let Some(i) = current {
                        if families[i].2.is_empty() {
                            families[i].2.push(line);
                        }
                    }
                } else if let Some(i) = current {
                    families[i].2.push(line);
                }
            }
        }
        for (_, help, lines) in families {
            writeln!(out, "{help}")?;
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
        Ok(())
    }

    fn write_one(&self, prefix: &str, out: &mut impl fmt::Write) -> fmt::Result {
        let prefix = &*prometheus_prefix(prefix);
        let pool = escape_label(&self.name);
        let c = &self.counts;
        let gauges: [(&str, &str, f64); 19] = [
            ("workers", "Worker threads.", self.workers as f64),
            (
                "workers_min",
                "Configured minimum of workers.",
                self.min_workers as f64,
            ),
            (
                "workers_max",
                "Configured maximum of workers.",
                self.max_workers as f64,
            ),
            (
                "workers_target",
                "Worker count the pool aims at.",
                self.target_workers as f64,
            ),
            (
                "workers_busy",
                "Workers running a task.",
                self.busy_workers as f64,
            ),
            (
                "workers_parked",
                "Workers parked for want of work.",
                self.parked as f64,
            ),
            (
                "workers_searching",
                "Workers searching for work.",
                self.searching as f64,
            ),
            (
                "workers_blocked",
                "Workers blocked in a non-helping wait.",
                self.blocked_workers as f64,
            ),
            (
                "workers_backpressured",
                "Workers waiting for room in another pool's full queue.",
                self.backpressured_workers as f64,
            ),
            (
                "tasks_queued",
                "Tasks accepted and not started.",
                self.queued as f64,
            ),
            (
                "external_backlog",
                "Work reported waiting outside the pool (counted as queued by the auto-scaler).",
                self.external_backlog as f64,
            ),
            (
                "keyed_tasks_queued",
                "Keyed tasks waiting in their shards.",
                self.keyed_queued as f64,
            ),
            (
                "injector_jobs",
                "Jobs in the global injector.",
                self.injector_len as f64,
            ),
            (
                "tasks_running",
                "Tasks started and not finished.",
                self.running as f64,
            ),
            (
                "queue_capacity",
                "Capacity of the task queue.",
                self.queue_capacity as f64,
            ),
            (
                "submitters_blocked",
                "Submitters blocked for room.",
                self.blocked_submitters as f64,
            ),
            (
                "timers_pending",
                "Tasks waiting on the timing wheel.",
                self.timers_pending as f64,
            ),
            (
                "dead_letters",
                "Dead letters kept.",
                self.dead_letters as f64,
            ),
            (
                "queue_oldest_wait_seconds",
                "Upper bound on the oldest queued task's wait, over every queue.",
                self.queue_ages.oldest().map_or(0.0, |d| d.as_secs_f64()),
            ),
        ];
        for (name, help, value) in gauges {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} gauge")?;
            writeln!(out, "{prefix}_{name}{{pool=\"{pool}\"}} {value}")?;
        }
        writeln!(
            out,
            "# HELP {prefix}_worker_queue_jobs Jobs in each live worker's deque."
        )?;
        writeln!(out, "# TYPE {prefix}_worker_queue_jobs gauge")?;
        for (i, len) in self.worker_queue_lens.iter().enumerate() {
            writeln!(
                out,
                "{prefix}_worker_queue_jobs{{pool=\"{pool}\",worker=\"{i}\"}} {len}"
            )?;
        }
        if let Some(state) = self.breaker {
            writeln!(
                out,
                "# HELP {prefix}_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open."
            )?;
            writeln!(out, "# TYPE {prefix}_breaker_state gauge")?;
            let v = match state {
                crate::metrics::BreakerState::Closed => 0,
                crate::metrics::BreakerState::Open => 1,
                crate::metrics::BreakerState::HalfOpen => 2,
            };
            writeln!(out, "{prefix}_breaker_state{{pool=\"{pool}\"}} {v}")?;
        }
        writeln!(
            out,
            "# HELP {prefix}_shut_down Whether shutdown began (1) or not (0)."
        )?;
        writeln!(out, "# TYPE {prefix}_shut_down gauge")?;
        writeln!(
            out,
            "{prefix}_shut_down{{pool=\"{pool}\"}} {}",
            u8::from(self.shut_down)
        )?;
        let counters = [
            (
                "tasks_submitted_total",
                "Tasks offered while the pool was open.",
                c.submitted,
            ),
            ("tasks_started_total", "Tasks started.", c.started),
            ("tasks_completed_total", "Tasks that returned.", c.completed),
            ("tasks_panicked_total", "Tasks that panicked.", c.panicked),
            (
                "tasks_rejected_total",
                "Submissions refused for want of room.",
                c.rejected,
            ),
            (
                "tasks_dropped_newest_total",
                "New tasks dropped by DropNewest.",
                c.dropped_newest,
            ),
            (
                "tasks_dropped_oldest_total",
                "Queued tasks evicted by DropOldest.",
                c.dropped_oldest,
            ),
            (
                "tasks_caller_runs_total",
                "Tasks run on the submitter by CallerRuns.",
                c.caller_runs,
            ),
            (
                "tasks_abandoned_total",
                "Queued tasks discarded by shutdown.",
                c.abandoned,
            ),
            (
                "steals_total",
                "Jobs taken from another worker's deque.",
                c.steals,
            ),
            (
                "steal_attempts_total",
                "Looks into another worker's deque.",
                c.steal_attempts,
            ),
            ("parks_total", "Times a worker parked.", c.parks),
            (
                "unparks_total",
                "Times a parked worker was woken for work.",
                c.unparks,
            ),
            (
                "stalls_total",
                "Tasks reported by the stall watchdog.",
                c.stalls,
            ),
            (
                "shard_handoffs_total",
                "Keyed shards run by another worker than last time.",
                c.shard_handoffs,
            ),
            ("resizes_up_total", "Times the pool grew.", c.resizes_up),
            (
                "resizes_down_total",
                "Times the pool shrank.",
                c.resizes_down,
            ),
            (
                "tasks_timed_out_total",
                "Tasks whose deadline passed before they started, or that returned TimedOut.",
                c.timed_out,
            ),
            (
                "tasks_cancelled_total",
                "Tasks cancelled, and periodic tasks stopped.",
                c.cancelled,
            ),
            (
                "tasks_deadline_missed_total",
                "Tasks that returned a value after their deadline.",
                c.deadline_missed,
            ),
            (
                "tasks_delayed_total",
                "Tasks accepted onto the timing wheel.",
                c.delayed,
            ),
            (
                "timers_fired_total",
                "Timing-wheel entries that came due and were queued.",
                c.timers_fired,
            ),
            (
                "timers_abandoned_total",
                "Delayed tasks and waiting retries abandoned by shutdown.",
                c.timers_abandoned,
            ),
            (
                "timers_run_early_total",
                "Delayed tasks and waiting retries run early by shutdown.",
                c.timers_run_early,
            ),
            (
                "task_errors_total",
                "Attempts that returned an application error.",
                c.app_errors,
            ),
            (
                "task_retries_total",
                "Attempts put back on the wheel for a retry.",
                c.retries,
            ),
            (
                "tasks_failed_total",
                "Fallible tasks without a retry policy that returned an error.",
                c.failed,
            ),
            (
                "tasks_dead_lettered_total",
                "Tasks that went to the dead letters.",
                c.dead_lettered,
            ),
            (
                "dead_letters_evicted_total",
                "Dead letters dropped from the full queue.",
                c.dead_letters_evicted,
            ),
        ];
        for (name, help, value) in counters {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} counter")?;
            writeln!(out, "{prefix}_{name}{{pool=\"{pool}\"}} {value}")?;
        }
        writeln!(
            out,
            "# HELP {prefix}_lock_contended_total Acquisitions that found a pool lock held."
        )?;
        writeln!(out, "# TYPE {prefix}_lock_contended_total counter")?;
        for l in &self.locks {
            writeln!(
                out,
                "{prefix}_lock_contended_total{{pool=\"{pool}\",lock=\"{}\"}} {}",
                l.name, l.contended
            )?;
        }
        writeln!(
            out,
            "# HELP {prefix}_lock_wait_seconds_total Time spent waiting for a held pool lock."
        )?;
        writeln!(out, "# TYPE {prefix}_lock_wait_seconds_total counter")?;
        for l in &self.locks {
            writeln!(
                out,
                "{prefix}_lock_wait_seconds_total{{pool=\"{pool}\",lock=\"{}\"}} {}",
                l.name,
                l.wait.as_secs_f64()
            )?;
        }
        for (name, help, h) in [
            (
                "queue_wait_seconds",
                "Time from acceptance to start.",
                &self.queue_wait,
            ),
            (
                "run_time_seconds",
                "Time from start to finish.",
                &self.run_time,
            ),
            (
                "timer_lateness_seconds",
                "Time from a timer's due tick to its firing.",
                &self.timer_lateness,
            ),
        ] {
            writeln!(out, "# HELP {prefix}_{name} {help}")?;
            writeln!(out, "# TYPE {prefix}_{name} histogram")?;
            for (bound, count) in h.octave_buckets() {
                writeln!(
                    out,
                    "{prefix}_{name}_bucket{{pool=\"{pool}\",le=\"{:e}\"}} {count}",
                    bound.as_secs_f64()
                )?;
            }
            writeln!(
                out,
                "{prefix}_{name}_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {}",
                h.count()
            )?;
            writeln!(
                out,
                "{prefix}_{name}_sum{{pool=\"{pool}\"}} {}",
                h.sum().as_secs_f64()
            )?;
            writeln!(
                out,
                "{prefix}_{name}_count{{pool=\"{pool}\"}} {}",
                h.count()
            )?;
        }
        self.write_tenants(prefix, &pool, out)
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    /// Publishes this snapshot through the `metrics` crate facade (feature
    /// `metrics`), so an exporter the program already runs picks the figures
    /// up: gauges as gauges, counters as absolute counters, and each
    /// histogram's p50/p90/p99/p99.9 and mean as gauges in seconds; every
    /// name starts with `prefix`, every series has a `pool` label. Call it
    /// periodically (e.g. from the program's own reporting loop).
    pub fn publish(&self, prefix: &str) {
        let pool = self.name.clone();
        let gauge = |name: &str, value: f64| {
            metrics::gauge!(format!("{prefix}_{name}"), "pool" => pool.clone()).set(value);
        };
        gauge("workers", self.workers as f64);
        gauge("workers_min", self.min_workers as f64);
        gauge("workers_max", self.max_workers as f64);
        gauge("workers_target", self.target_workers as f64);
        gauge("workers_busy", self.busy_workers as f64);
        gauge("workers_parked", self.parked as f64);
        gauge("workers_blocked", self.blocked_workers as f64);
        gauge("workers_backpressured", self.backpressured_workers as f64);
        gauge("tasks_queued", self.queued as f64);
        gauge("keyed_tasks_queued", self.keyed_queued as f64);
        gauge("tasks_running", self.running as f64);
        gauge("submitters_blocked", self.blocked_submitters as f64);
        gauge("timers_pending", self.timers_pending as f64);
        gauge("dead_letters", self.dead_letters as f64);
        let c = &self.counts;
        for (name, value) in [
            ("tasks_submitted_total", c.submitted),
            ("tasks_started_total", c.started),
            ("tasks_completed_total", c.completed),
            ("tasks_panicked_total", c.panicked),
            ("tasks_rejected_total", c.rejected),
            ("tasks_dropped_newest_total", c.dropped_newest),
            ("tasks_dropped_oldest_total", c.dropped_oldest),
            ("tasks_caller_runs_total", c.caller_runs),
            ("tasks_abandoned_total", c.abandoned),
            ("steals_total", c.steals),
            ("steal_attempts_total", c.steal_attempts),
            ("parks_total", c.parks),
            ("unparks_total", c.unparks),
            ("stalls_total", c.stalls),
            ("shard_handoffs_total", c.shard_handoffs),
            ("resizes_up_total", c.resizes_up),
            ("resizes_down_total", c.resizes_down),
            ("tasks_timed_out_total", c.timed_out),
            ("tasks_cancelled_total", c.cancelled),
            ("tasks_deadline_missed_total", c.deadline_missed),
            ("tasks_delayed_total", c.delayed),
            ("timers_fired_total", c.timers_fired),
            ("timers_abandoned_total", c.timers_abandoned),
            ("timers_run_early_total", c.timers_run_early),
            ("task_errors_total", c.app_errors),
            ("task_retries_total", c.retries),
            ("tasks_failed_total", c.failed),
            ("tasks_dead_lettered_total", c.dead_lettered),
            ("dead_letters_evicted_total", c.dead_letters_evicted),
        ] {
            metrics::counter!(format!("{prefix}_{name}"), "pool" => pool.clone()).absolute(value);
        }
        for l in &self.locks {
            let labels = [("pool", pool.clone()), ("lock", l.name.to_string())];
            metrics::counter!(format!("{prefix}_lock_contended_total"), &labels)
                .absolute(l.contended);
        }
        for (name, h) in [
            ("queue_wait_seconds", &self.queue_wait),
            ("run_time_seconds", &self.run_time),
            ("timer_lateness_seconds", &self.timer_lateness),
        ] {
            for (q, v) in [
                ("0.5", h.p50()),
                ("0.9", h.p90()),
                ("0.99", h.p99()),
                ("0.999", h.p999()),
            ] {
                let labels = [("pool", pool.clone()), ("quantile", q.to_string())];
                metrics::gauge!(format!("{prefix}_{name}"), &labels).set(v.as_secs_f64());
            }
            gauge(&format!("{name}_mean"), h.mean().as_secs_f64());
        }
    }
}

/// `prefix` as the Prometheus text exports write it: each character a
/// metric name cannot hold becomes `_` (a name is ASCII letters, digits,
/// `_` and `:`, not starting with a digit), so that a prefix such as
/// `"my-app"` gives `my_app_workers`, never a text a scraper refuses.
///
/// ```
/// use ebbtide::metrics::prometheus_prefix;
/// assert_eq!(prometheus_prefix("ebbtide"), "ebbtide");
/// assert_eq!(prometheus_prefix("my-app.v2"), "my_app_v2");
/// assert_eq!(prometheus_prefix("2nd"), "_2nd");
/// ```
pub fn prometheus_prefix(prefix: &str) -> std::borrow::Cow<'_, str> {
    let valid = |i: usize, c: char| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    };
    if prefix.chars().enumerate().all(|(i, c)| valid(i, c)) {
        return std::borrow::Cow::Borrowed(prefix);
    }
    let mut out = String::with_capacity(prefix.len() + 1);
    if prefix.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(prefix.chars().map(|c| if valid(1, c) { c } else { '_' }));
    std::borrow::Cow::Owned(out)
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
