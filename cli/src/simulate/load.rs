//! The simulated load: the scenarios' arrival rate over time, service
//! times, Zipf keys, and the task body. Pure functions of their inputs
//! (and of a seeded generator), unit-tested without a pool.

use std::time::{Duration, Instant};

use super::{Scenario, Service};

/// splitmix64: small, seeded, good enough for a load.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The arrival rate (per second) at `t` into a run of `d`.
pub fn rate_at(scenario: Scenario, base: f64, t: Duration, d: Duration) -> f64 {
    let x = (t.as_secs_f64() / d.as_secs_f64()).clamp(0.0, 1.0);
    match scenario {
        Scenario::Steady | Scenario::BlockingMix | Scenario::SkewedKeys | Scenario::Pipeline => {
            base
        }
        Scenario::Burst => {
            if (0.3..0.4).contains(&x) || (0.7..0.75).contains(&x) {
                5.0 * base
            } else {
                base
            }
        }
        Scenario::Ramp => base * (0.2 + 1.8 * x),
        // A trough at the ends, a peak of twice the base in the middle.
        Scenario::Diurnal => base * (1.05 - 0.95 * (std::f64::consts::TAU * x).cos()),
    }
}

/// The arrivals the scenario's rate adds up to over `d` (its integral,
/// summed in steps of a thousandth of `d`, at each step's midpoint).
pub fn expected_arrivals(scenario: Scenario, base: f64, d: Duration) -> f64 {
    const STEPS: u32 = 1_000;
    let step = d / STEPS;
    (0..STEPS)
        .map(|i| rate_at(scenario, base, step * i + step / 2, d) * step.as_secs_f64())
        .sum()
}

/// A service time drawn from the distribution, with the given mean.
pub fn service_time(kind: Service, mean: Duration, rng: &mut Rng) -> Duration {
    let m = mean.as_secs_f64();
    let s = match kind {
        Service::Fixed => m,
        Service::Exponential => rng.exponential(m),
        Service::LogNormal => {
            // σ = 1, μ chosen so the mean is `m`: e^(μ + σ²/2) = m.
            let sigma = 1.0;
            (m.ln() - sigma * sigma / 2.0 + sigma * rng.normal()).exp()
        }
    };
    // A cap, so that one draw from the tail cannot hold a worker for long.
    Duration::from_secs_f64(s.min(m * 50.0))
}

/// Keys 0..n drawn with probability ∝ 1/(k+1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn draw(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// One arrival.
pub struct Task {
    pub arrived: Instant,
    pub service: Duration,
    pub blocks: bool,
}

impl Task {
    /// Takes its service time: asleep if it blocks, computing otherwise.
    pub fn run(&self) {
        if self.blocks {
            std::thread::sleep(self.service);
        } else {
            let end = Instant::now() + self.service;
            let mut x = 1u64;
            while Instant::now() < end {
                for _ in 0..64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_shape_the_rate() {
        let d = Duration::from_secs(10);
        let at = |s, secs: f64| rate_at(s, 100.0, Duration::from_secs_f64(secs), d);
        assert_eq!(at(Scenario::Steady, 5.0), 100.0);
        assert_eq!(at(Scenario::Burst, 1.0), 100.0);
        assert_eq!(at(Scenario::Burst, 3.5), 500.0);
        assert_eq!(at(Scenario::Burst, 7.2), 500.0);
        assert!((at(Scenario::Ramp, 0.0) - 20.0).abs() < 1e-9);
        assert!((at(Scenario::Ramp, 10.0) - 200.0).abs() < 1e-9);
        assert!((at(Scenario::Diurnal, 0.0) - 10.0).abs() < 1e-9);
        assert!((at(Scenario::Diurnal, 5.0) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn expected_arrivals_add_up_the_scenarios_rate() {
        let d = Duration::from_secs(10);
        let n = |s| expected_arrivals(s, 100.0, d);
        assert!((n(Scenario::Steady) - 1_000.0).abs() < 1e-6);
        // Five times the base for 15 % of the run: 1,000 × (0.85 + 0.75).
        assert!(
            (n(Scenario::Burst) - 1_600.0).abs() < 1e-6,
            "{}",
            n(Scenario::Burst)
        );
        // A mean rate of 1.1 and 1.05 times the base.
        assert!((n(Scenario::Ramp) - 1_100.0).abs() < 1e-6);
        assert!((n(Scenario::Diurnal) - 1_050.0).abs() < 1e-6);
    }

    #[test]
    fn service_times_have_their_mean() {
        let mean = Duration::from_millis(1);
        for kind in [Service::Fixed, Service::Exponential, Service::LogNormal] {
            let mut rng = Rng::new(7);
            let n = 200_000;
            let total: f64 = (0..n)
                .map(|_| service_time(kind, mean, &mut rng).as_secs_f64())
                .sum();
            let m = total / n as f64 * 1e3;
            // The cap at 50× the mean trims a little of the log-normal's tail.
            assert!((0.95..1.02).contains(&m), "{kind:?}: mean {m} ms");
        }
    }

    #[test]
    fn zipf_keys_favour_the_first() {
        let z = Zipf::new(100, 1.0);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u32; 100];
        for _ in 0..100_000 {
            counts[z.draw(&mut rng) as usize] += 1;
        }
        // P(0) = 1/H(100) ≈ 0.193, P(1) ≈ 0.096.
        assert!((18_000..20_600).contains(&counts[0]), "{}", counts[0]);
        assert!((8_800..10_500).contains(&counts[1]), "{}", counts[1]);
        assert!(counts[99] < 400);
    }
}
