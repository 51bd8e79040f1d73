//! What a simulation drives: one elastic pool, or (scenario `pipeline`) a
//! pipeline of elastic stages — parse (CPU, a fifth of the service time)
//! → enrich (blocking, the service time) → batches of 100 or 100 ms →
//! write (blocking, 5 ms per batch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ebbtide::metrics::{Metrics, ResizeEvent};
use ebbtide::pipeline::{Pipeline, Stage};
use ebbtide::Pool;

use super::load::Task;
use super::Tally;

/// A pipeline item: the arrival, and when its first stage started it.
pub struct Item {
    task: Task,
    started: Option<Instant>,
}

/// How the pool, or each stage, sizes itself.
#[derive(Clone, Copy)]
pub struct Sizing {
    pub workers: (usize, usize),
    pub keep_alive: Duration,
    pub queue_wait_target: Duration,
}

impl Sizing {
    fn stage(&self, name: &str) -> Stage {
        Stage::new(name)
            .elastic(self.workers.0, self.workers.1)
            .keep_alive(self.keep_alive)
            .queue_wait_target(self.queue_wait_target)
    }
}

pub enum Target {
    Pool(Pool),
    Pipeline(Arc<Pipeline<Item>>),
}

/// The write stage's time per batch.
const WRITE: Duration = Duration::from_millis(5);

impl Target {
    pub fn pool(sizing: Sizing) -> Result<Target, String> {
        Pool::builder()
            .name("simulate")
            .min_workers(sizing.workers.0)
            .max_workers(sizing.workers.1)
            .keep_alive(sizing.keep_alive)
            .queue_wait_target(sizing.queue_wait_target)
            .build()
            .map(Target::Pool)
            .map_err(|e| e.to_string())
    }

    pub fn pipeline(sizing: Sizing, tally: &Arc<Tally>) -> Result<Target, String> {
        let t = Arc::clone(tally);
        Pipeline::<Item>::builder()
            .map(sizing.stage("parse"), |mut item: Item| {
                item.started = Some(Instant::now());
                Task {
                    service: item.task.service / 5,
                    blocks: false,
                    ..item.task
                }
                .run();
                item
            })
            .map(sizing.stage("enrich"), |item: Item| {
                Task {
                    blocks: true,
                    ..item.task
                }
                .run();
                item
            })
            .batch(Stage::new("batch"), 100, Duration::from_millis(100))
            .sink(sizing.stage("write"), move |batch: Vec<Item>| {
                std::thread::sleep(WRITE);
                for item in batch {
                    let started = item.started.unwrap_or(item.task.arrived);
                    t.finish(item.task.arrived, started);
                }
            })
            .build()
            .map(|p| Target::Pipeline(Arc::new(p)))
            .map_err(|e| e.to_string())
    }

    /// Every stage's metrics (one for a pool).
    pub fn metrics(&self) -> Vec<Metrics> {
        match self {
            Target::Pool(p) => vec![p.metrics()],
            Target::Pipeline(p) => p.metrics(),
        }
    }

    /// What `/metrics` serves.
    pub fn prometheus(&self) -> Box<dyn Fn() -> String + Send + Sync> {
        match self {
            Target::Pool(p) => {
                let h = p.handle();
                Box::new(move || h.metrics().to_prometheus("ebbtide"))
            }
            Target::Pipeline(p) => {
                let p = Arc::clone(p);
                Box::new(move || p.to_prometheus("ebbtide"))
            }
        }
    }

    /// Submits one arrival; `false` if refused.
    pub fn submit(&self, task: Task, key: Option<u64>, tally: &Arc<Tally>) -> bool {
        match self {
            Target::Pool(pool) => {
                let t = Arc::clone(tally);
                let body = move || {
                    let started = Instant::now();
                    task.run();
                    t.finish(task.arrived, started);
                };
                match key {
                    Some(k) => pool.task().key(&k).execute(body).is_ok(),
                    None => pool.execute(body).is_ok(),
                }
            }
            Target::Pipeline(p) => p
                .send(Item {
                    task,
                    started: None,
                })
                .is_ok(),
        }
    }

    /// Lets every accepted arrival finish, or with `abandon` (they did not
    /// finish within the run's bound) abandons what has not started;
    /// returns the final metrics, the resizes (with their stage's name)
    /// and whether every accepted arrival is accounted for (ran, or was
    /// abandoned or still running when abandoned).
    pub fn finish(self, abandon: bool) -> (Vec<Metrics>, Vec<(String, ResizeEvent)>, bool) {
        match self {
            Target::Pool(pool) => {
                if !abandon {
                    pool.wait_idle();
                }
                let resizes = pool
                    .resize_history()
                    .into_iter()
                    .map(|r| ("simulate".to_string(), r))
                    .collect();
                let metrics = vec![pool.metrics()];
                let r = if abandon {
                    pool.shutdown_now()
                } else {
                    pool.shutdown()
                };
                // Drained, nothing may be abandoned or still running.
                let unfinished = if abandon {
                    r.abandoned + r.still_running
                } else {
                    0
                };
                let accounted = r.completed + r.panicked + unfinished == r.submitted;
                (metrics, resizes, accounted)
            }
            Target::Pipeline(p) => {
                let resizes = p.resize_history();
                let report = if abandon {
                    p.shutdown_timeout(Duration::ZERO)
                } else {
                    p.shutdown()
                };
                let metrics = p.metrics();
                let accounted = report.stages.iter().all(|s| {
                    let other = s.abandoned + s.cancelled + s.failed + s.panicked + s.still_running;
                    s.received == s.completed + other && (abandon || other == 0)
                });
                (metrics, resizes, accounted)
            }
        }
    }
}
