//! `ebbtide size`: how many workers a load needs, by Little's law.
//!
//! In-flight work L = λ·W (arrival rate × time each item spends in the
//! system); split over the instances; then either headroom on top (L per
//! instance × (1 + headroom)) or the utilisation rule (L per instance ÷
//! target utilisation, so each worker is busy that fraction of the time);
//! the recommendation is the larger of the rules asked for.

use serde::Serialize;
use std::time::Duration;

use crate::units::show;

/// What the calculator was asked.
pub struct Question {
    pub rate: f64,
    pub latency: Duration,
    pub instances: usize,
    pub headroom: f64,
    pub target_util: Option<f64>,
}

/// Each step's figure, for people (`steps`) and machines (JSON).
#[derive(Debug, Serialize, PartialEq)]
pub struct Answer {
    pub rate_per_second: f64,
    pub latency_seconds: f64,
    pub in_flight: f64,
    pub instances: usize,
    pub in_flight_per_instance: f64,
    pub headroom: f64,
    pub workers_with_headroom: u64,
    pub target_utilisation: Option<f64>,
    pub workers_at_target_utilisation: Option<u64>,
    pub recommended_workers_per_instance: u64,
    pub recommended_workers_total: u64,
}

/// Rounds up, ignoring the last bits of floating-point error (100 × 1.2
/// is 120.00000000000001 in `f64`, and must give 120).
fn ceil(x: f64) -> u64 {
    let r = x.round();
    if (x - r).abs() < 1e-9 * x.abs().max(1.0) {
        r as u64
    } else {
        x.ceil() as u64
    }
}

/// The most workers an answer counts exactly (2^53, where `f64` stops
/// holding every whole number); a load past it is a mistake in the flags.
pub const MAX_WORKERS: f64 = 9_007_199_254_740_992.0;

/// # Errors
/// When the load needs more than [`MAX_WORKERS`] workers in all, naming
/// the figures that lead there.
pub fn answer(q: &Question) -> Result<Answer, String> {
    let w = q.latency.as_secs_f64();
    let l = q.rate * w;
    let per = l / q.instances as f64;
    let most = (per * (1.0 + q.headroom)).max(q.target_util.map_or(0.0, |u| per / u));
    if most * q.instances as f64 > MAX_WORKERS {
        return Err(format!(
            "{:e}/s × {} s needs more than 2^53 workers: check --rate and --latency",
            q.rate,
            num(w)
        ));
    }
    let with_headroom = ceil(per * (1.0 + q.headroom)).max(1);
    let at_util = q.target_util.map(|u| ceil(per / u).max(1));
    let per_instance = with_headroom.max(at_util.unwrap_or(0));
    Ok(Answer {
        rate_per_second: q.rate,
        latency_seconds: w,
        in_flight: l,
        instances: q.instances,
        in_flight_per_instance: per,
        headroom: q.headroom,
        workers_with_headroom: with_headroom,
        target_utilisation: q.target_util,
        workers_at_target_utilisation: at_util,
        recommended_workers_per_instance: per_instance,
        recommended_workers_total: per_instance * q.instances as u64,
    })
}

/// A number without trailing zeros (`400`, `142.86`).
fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The reasoning, one step per line.
pub fn steps(q: &Question, a: &Answer) -> Vec<String> {
    let mut out = vec![
        format!(
            "1. In flight (Little's law): L = λ × W = {}/s × {} = {}",
            num(a.rate_per_second),
            show(q.latency),
            num(a.in_flight)
        ),
        format!(
            "2. Per instance: {} / {} instance{} = {}",
            num(a.in_flight),
            a.instances,
            if a.instances == 1 { "" } else { "s" },
            num(a.in_flight_per_instance)
        ),
        format!(
            "3. Headroom: {} × (1 + {}%) = {} → {} workers per instance (bursts above the mean find a free worker)",
            num(a.in_flight_per_instance),
            num(a.headroom * 100.0),
            num(a.in_flight_per_instance * (1.0 + a.headroom)),
            a.workers_with_headroom
        ),
    ];
    if let (Some(u), Some(n)) = (a.target_utilisation, a.workers_at_target_utilisation) {
        out.push(format!(
            "4. Target utilisation {}: {} / {} = {} → {} workers per instance (each busy {}% of the time at this load)",
            num(u),
            num(a.in_flight_per_instance),
            num(u),
            num(a.in_flight_per_instance / u),
            n,
            num(u * 100.0)
        ));
    }
    out.push(format!(
        "Recommended: {} workers per instance, {} in all{}",
        a.recommended_workers_per_instance,
        a.recommended_workers_total,
        if a.target_utilisation.is_some() {
            " (the larger of the two rules)"
        } else {
            ""
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_comes_out_at_120() {
        let q = Question {
            rate: 5000.0,
            latency: Duration::from_millis(80),
            instances: 4,
            headroom: 0.2,
            target_util: None,
        };
        let a = answer(&q).unwrap();
        assert_eq!(a.in_flight, 400.0);
        assert_eq!(a.in_flight_per_instance, 100.0);
        assert_eq!(a.workers_with_headroom, 120);
        assert_eq!(a.recommended_workers_per_instance, 120);
        assert_eq!(a.recommended_workers_total, 480);
        let s = steps(&q, &a);
        assert_eq!(
            s[0],
            "1. In flight (Little's law): L = λ × W = 5000/s × 80.0 ms = 400"
        );
        assert_eq!(s[1], "2. Per instance: 400 / 4 instances = 100");
        assert!(s[2].starts_with("3. Headroom: 100 × (1 + 20%) = 120 → 120 workers"));
    }

    #[test]
    fn the_utilisation_rule_rounds_up_and_the_larger_rule_wins() {
        let q = Question {
            rate: 5000.0,
            latency: Duration::from_millis(80),
            instances: 4,
            headroom: 0.2,
            target_util: Some(0.7),
        };
        let a = answer(&q).unwrap();
        assert_eq!(a.workers_at_target_utilisation, Some(143)); // 100 / 0.7 = 142.86
        assert_eq!(a.recommended_workers_per_instance, 143);
        // A tiny load still needs one worker.
        let q = Question {
            rate: 1.0,
            latency: Duration::from_millis(1),
            instances: 1,
            headroom: 0.0,
            target_util: None,
        };
        assert_eq!(answer(&q).unwrap().recommended_workers_per_instance, 1);
        // A load past what can be counted is refused, naming its figures.
        let q = Question {
            rate: 1e308,
            latency: Duration::from_millis(10),
            instances: 1,
            headroom: 0.2,
            target_util: None,
        };
        let e = answer(&q).unwrap_err();
        assert!(e.contains("needs more than 2^53 workers"), "{e}");
    }
}
