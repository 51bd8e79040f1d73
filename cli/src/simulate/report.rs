//! The simulation's outputs: the summary table (with the Little's-law
//! check), `summary.json`, `timeseries.csv`, and `report.html` — one
//! self-contained page with inline SVG charts drawn by plotters.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ebbtide::metrics::{Metrics, ResizeEvent};
use plotters::prelude::*;
use serde::Serialize;

use super::{Sample, Scenario, SimulateArgs, Tally};

#[derive(Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub interrupted: bool,
    /// The generator could not submit as fast as the rate asked: it
    /// stopped at the run's end with arrivals still due, so the figures
    /// are of a lighter load than asked.
    pub generator_fell_behind: bool,
    pub duration_seconds: f64,
    pub base_rate_per_second: f64,
    pub blocking_fraction: f64,
    /// The pool's (each stage's) keep-alive, seconds.
    pub keep_alive_seconds: f64,
    /// The pool's (each stage's) queue-wait target, milliseconds.
    pub queue_wait_target_ms: f64,
    pub arrivals: u64,
    pub completed: u64,
    /// λ: arrivals per second over the run.
    pub arrival_rate: f64,
    /// W: mean time in system of the completed tasks, seconds.
    pub mean_time_in_system: f64,
    /// L: tasks in the system, time-averaged (integrated at every arrival
    /// and departure).
    pub mean_in_system: f64,
    /// The same, averaged over the 10 ms samples instead (low when the
    /// cores are saturated: the sampler then runs late, after tasks left).
    pub mean_in_system_sampled: f64,
    /// λ·W, which Little's law says equals L.
    pub little_lambda_w: f64,
    pub queue_wait_p50_ms: f64,
    pub queue_wait_p99_ms: f64,
    pub workers_min: usize,
    pub workers_max: usize,
    pub workers_mean: f64,
    pub resizes: usize,
    /// Per stage, for a pipeline (empty for a pool).
    pub stages: Vec<StageSummary>,
}

/// One pipeline stage over the run.
#[derive(Serialize)]
pub struct StageSummary {
    pub name: String,
    pub completed: u64,
    pub workers_max: usize,
    pub queue_wait_p99_ms: f64,
    pub service_time_p50_ms: f64,
    pub service_time_p99_ms: f64,
}

impl Summary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        args: &SimulateArgs,
        blocking: f64,
        samples: &[Sample],
        tally: &Tally,
        elapsed: Duration,
        stages: &[Metrics],
        resizes: &[(String, ResizeEvent)],
        interrupted: bool,
        generator_fell_behind: bool,
    ) -> Summary {
        let metrics = &stages[0];
        let arrivals = tally.arrived.load(Relaxed);
        let completed = tally.finished.load(Relaxed);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let lambda = arrivals as f64 / secs;
        let w = tally.time_in_system_ns.load(Relaxed) as f64 / 1e9 / completed.max(1) as f64;
        let n = samples.len().max(1) as f64;
        let sampled = samples.iter().map(|s| s.in_system as f64).sum::<f64>() / n;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Summary {
            scenario: args.scenario,
            interrupted,
            generator_fell_behind,
            duration_seconds: secs,
            base_rate_per_second: args.rate,
            blocking_fraction: blocking,
            keep_alive_seconds: args.keep_alive.as_secs_f64(),
            queue_wait_target_ms: ms(args.queue_wait_target),
            arrivals,
            completed,
            arrival_rate: lambda,
            mean_time_in_system: w,
            mean_in_system: tally.mean_in_system(elapsed),
            mean_in_system_sampled: sampled,
            little_lambda_w: lambda * w,
            queue_wait_p50_ms: ms(metrics.queue_wait.p50()),
            queue_wait_p99_ms: ms(metrics.queue_wait.p99()),
            workers_min: samples.iter().map(|s| s.workers).min().unwrap_or(0),
            workers_max: samples.iter().map(|s| s.workers).max().unwrap_or(0),
            workers_mean: samples.iter().map(|s| s.workers as f64).sum::<f64>() / n,
            resizes: resizes.len(),
            stages: if stages.len() > 1 {
                stages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| StageSummary {
                        name: m.name.clone(),
                        completed: m.counts.completed,
                        workers_max: samples
                            .iter()
                            .filter_map(|s| s.stages.get(i).map(|st| st.0))
                            .max()
                            .unwrap_or(m.workers),
                        queue_wait_p99_ms: ms(m.queue_wait.p99()),
                        service_time_p50_ms: ms(m.run_time.p50()),
                        service_time_p99_ms: ms(m.run_time.p99()),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub fn print(&self) {
        let row = |name: &str, value: String| println!("  {name:<34} {value}");
        println!();
        row(
            "arrivals / completed",
            format!("{} / {}", self.arrivals, self.completed),
        );
        row("arrival rate λ", format!("{:.1}/s", self.arrival_rate));
        row(
            "mean time in system W",
            format!("{:.3} ms", self.mean_time_in_system * 1e3),
        );
        row(
            "mean tasks in system L",
            format!("{:.3}", self.mean_in_system),
        );
        row(
            "  (from the 10 ms samples)",
            format!("{:.3}", self.mean_in_system_sampled),
        );
        let ratio = if self.little_lambda_w > 0.0 {
            self.mean_in_system / self.little_lambda_w
        } else {
            0.0
        };
        row(
            "Little's law: λ·W",
            format!("{:.3} (L / λ·W = {ratio:.3})", self.little_lambda_w),
        );
        row(
            "queue wait p50 / p99",
            format!(
                "{:.3} ms / {:.3} ms",
                self.queue_wait_p50_ms, self.queue_wait_p99_ms
            ),
        );
        row(
            "workers min / mean / max",
            format!(
                "{} / {:.1} / {}",
                self.workers_min, self.workers_mean, self.workers_max
            ),
        );
        row("resizes", self.resizes.to_string());
        if self.generator_fell_behind {
            println!(
                "\n  warning: the generator could not submit as fast as --rate asked and stopped at \
                 the run's end; these figures are of a lighter load ({:.0}/s) than asked",
                self.arrival_rate
            );
        }
        if !self.stages.is_empty() {
            println!();
            println!(
                "  {:<10} {:>10} {:>12} {:>16} {:>22}",
                "stage", "completed", "workers max", "queue wait p99", "service p50 / p99"
            );
            for st in &self.stages {
                println!(
                    "  {:<10} {:>10} {:>12} {:>13.3} ms {:>9.3} / {:.3} ms",
                    st.name,
                    st.completed,
                    st.workers_max,
                    st.queue_wait_p99_ms,
                    st.service_time_p50_ms,
                    st.service_time_p99_ms
                );
            }
        }
        println!();
    }
}

/// Writes `report.html`, `timeseries.csv` and `summary.json` into `dir`.
pub fn write(
    dir: &Path,
    args: &SimulateArgs,
    summary: &Summary,
    samples: &[Sample],
    resizes: &[(String, ResizeEvent)],
) -> std::io::Result<()> {
    let mut csv = String::from(
        "t_s,workers,busy,queued,in_system,arrival_rate,throughput,offered_workers,mean_time_in_system_ms,queue_wait_p50_ms,queue_wait_p99_ms\n",
    );
    for s in samples {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{},{},{:.1},{:.1},{:.3},{:.4},{:.4},{:.4}",
            s.t,
            s.workers,
            s.busy,
            s.queued,
            s.in_system,
            s.arrival_rate,
            s.throughput,
            s.offered_workers,
            s.mean_time_in_system_ms,
            s.queue_wait_p50_ms,
            s.queue_wait_p99_ms
        );
    }
    std::fs::write(dir.join("timeseries.csv"), csv)?;
    let resizes_json: Vec<_> = resizes
        .iter()
        .map(|(stage, r)| serde_json::json!({ "stage": stage, "event": r }))
        .collect();
    let json = serde_json::json!({ "summary": summary, "resizes": resizes_json });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&json).expect("plain figures serialise"),
    )?;
    std::fs::write(
        dir.join("report.html"),
        html(args, summary, samples, resizes),
    )
}

fn html(
    args: &SimulateArgs,
    s: &Summary,
    samples: &[Sample],
    resizes: &[(String, ResizeEvent)],
) -> String {
    let span = samples.last().map_or(1.0, |x| x.t).max(0.01);
    let marks: Vec<f64> = resizes.iter().map(|(_, r)| r.at.as_secs_f64()).collect();
    let workers = chart(
        "Workers against load",
        "workers",
        span,
        &marks,
        &[
            (
                "workers",
                &BLUE,
                samples.iter().map(|x| (x.t, x.workers as f64)).collect(),
            ),
            (
                "busy",
                &GREEN,
                samples.iter().map(|x| (x.t, x.busy as f64)).collect(),
            ),
            (
                "offered load (λ × mean service time)",
                &RED,
                samples.iter().map(|x| (x.t, x.offered_workers)).collect(),
            ),
        ],
    );
    let depth = chart(
        "Queue depth",
        "tasks",
        span,
        &marks,
        &[
            (
                "queued",
                &MAGENTA,
                samples.iter().map(|x| (x.t, x.queued as f64)).collect(),
            ),
            (
                "in system",
                &CYAN,
                samples.iter().map(|x| (x.t, x.in_system as f64)).collect(),
            ),
        ],
    );
    let waits = chart(
        "Queue wait (last 100 ms)",
        "ms",
        span,
        &marks,
        &[
            (
                "p50",
                &BLUE,
                samples.iter().map(|x| (x.t, x.queue_wait_p50_ms)).collect(),
            ),
            (
                "p99",
                &RED,
                samples.iter().map(|x| (x.t, x.queue_wait_p99_ms)).collect(),
            ),
        ],
    );
    let little = if s.little_lambda_w > 0.0 {
        s.mean_in_system / s.little_lambda_w
    } else {
        0.0
    };
    let mut rows = String::new();
    for (stage, r) in resizes {
        let _ = writeln!(
            rows,
            "<tr><td>{:.3} s</td><td>{stage}</td><td>{} → {}</td><td>{:?}</td></tr>",
            r.at.as_secs_f64(),
            r.from,
            r.to,
            r.reason
        );
    }
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    let per_stage = |title: &str, unit: &str, pick: fn(&(usize, usize, usize)) -> usize| {
        let series: Vec<Series<'_>> = s
            .stages
            .iter()
            .enumerate()
            .map(|(i, st)| {
                (
                    st.name.as_str(),
                    palette[i % palette.len()],
                    samples
                        .iter()
                        .map(|x| (x.t, x.stages.get(i).map_or(0, pick) as f64))
                        .collect(),
                )
            })
            .collect();
        chart(title, unit, span, &marks, &series)
    };
    let mut stage_rows = String::new();
    let mut stage_charts = String::new();
    if !s.stages.is_empty() {
        stage_rows.push_str(
            "<h2>Stages</h2><table id=\"stages\"><tr><th>stage</th><th>completed</th><th>workers max</th><th>queue wait p99</th><th>service p50 / p99</th></tr>\n",
        );
        for st in &s.stages {
            let _ = writeln!(
                stage_rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3} ms</td><td>{:.3} / {:.3} ms</td></tr>",
                st.name,
                st.completed,
                st.workers_max,
                st.queue_wait_p99_ms,
                st.service_time_p50_ms,
                st.service_time_p99_ms
            );
        }
        stage_rows.push_str("</table>\n");
        stage_charts = format!(
            "<div class=\"chart\" id=\"stage-workers\">{}</div>\n<div class=\"chart\" id=\"stage-queues\">{}</div>",
            per_stage("Workers per stage", "workers", |x| x.0),
            per_stage("Queue depth per stage", "tasks", |x| x.2)
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ebbtide simulate: {scenario}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}}
table{{border-collapse:collapse}}td,th{{padding:2px 12px;text-align:left}}
.chart{{margin:1em 0}}</style></head><body>
<h1>ebbtide simulate: {scenario}</h1>
<p>{duration:.1} s, base rate {rate}/s, {service} service times of mean {mean:.3} ms,
{blocking:.0}% blocking, {lo}..{hi} workers, keep-alive {keep_alive:.3} s, queue-wait
target {wait_target:.3} ms. Dashed lines mark resizes.</p>
<table id="summary">
<tr><th>arrivals / completed</th><td>{arrivals} / {completed}</td></tr>
<tr><th>arrival rate λ</th><td>{lambda:.1}/s</td></tr>
<tr><th>mean time in system W</th><td>{w:.3} ms</td></tr>
<tr><th>mean tasks in system L</th><td>{l:.3} (from the 10 ms samples: {ls:.3})</td></tr>
<tr><th>Little's law λ·W</th><td>{lw:.3} (L / λ·W = {little:.3})</td></tr>
<tr><th>queue wait p50 / p99</th><td>{p50:.3} ms / {p99:.3} ms</td></tr>
<tr><th>workers min / mean / max</th><td>{wmin} / {wmean:.1} / {wmax}</td></tr>
</table>
<div class="chart" id="workers">{workers}</div>
<div class="chart" id="depth">{depth}</div>
<div class="chart" id="waits">{waits}</div>
{stage_rows}{stage_charts}
<h2>Resizes</h2>
<table id="resizes"><tr><th>at</th><th>pool</th><th>workers</th><th>reason</th></tr>
{rows}</table>
</body></html>
"#,
        scenario = s.scenario.name(),
        duration = s.duration_seconds,
        rate = args.rate,
        service = args.service.name(),
        mean = args.service_mean.as_secs_f64() * 1e3,
        blocking = s.blocking_fraction * 100.0,
        lo = args.elastic.0,
        hi = args.elastic.1,
        keep_alive = args.keep_alive.as_secs_f64(),
        wait_target = args.queue_wait_target.as_secs_f64() * 1e3,
        arrivals = s.arrivals,
        completed = s.completed,
        lambda = s.arrival_rate,
        w = s.mean_time_in_system * 1e3,
        l = s.mean_in_system,
        ls = s.mean_in_system_sampled,
        lw = s.little_lambda_w,
        p50 = s.queue_wait_p50_ms,
        p99 = s.queue_wait_p99_ms,
        wmin = s.workers_min,
        wmean = s.workers_mean,
        wmax = s.workers_max,
    )
}

type Series<'a> = (&'a str, &'a RGBColor, Vec<(f64, f64)>);

/// One line chart as an inline `<svg>`: time on x, the series on y, a
/// dashed vertical line at each resize.
fn chart(title: &str, unit: &str, span: f64, marks: &[f64], series: &[Series<'_>]) -> String {
    let mut svg = String::new();
    let top = series
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    {
        let root = SVGBackend::with_string(&mut svg, (960, 300)).into_drawing_area();
        let drawn: Result<(), Box<dyn std::error::Error>> = (|| {
            root.fill(&WHITE)?;
            let mut c = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..span, 0.0..top)?;
            c.configure_mesh()
                .x_desc("seconds")
                .y_desc(unit)
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for &m in marks {
                c.draw_series(DashedLineSeries::new(
                    [(m, 0.0), (m, top)],
                    4,
                    3,
                    BLACK.mix(0.35).stroke_width(1),
                ))?;
            }
            for (name, color, pts) in series {
                let color = **color;
                c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            return format!("<p>chart {title} could not be drawn: {e}</p>");
        }
    }
    svg
}
