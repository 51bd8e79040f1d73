//! The `ebbtide` program, run as a user runs it: each subcommand at small
//! sizes (verdict lines, files written, exit codes), the sizing example
//! exactly, `/metrics` scraped over HTTP during a run and parsed by a real
//! Prometheus parser, an interrupt that drains, and every bad input.
//! Every wait on the program has a deadline: a hang fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(120);

fn ebbtide() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ebbtide"))
}

/// Waits for `child` to exit within [`PATIENCE`], killing it otherwise.
/// Stops a running `ebbtide worker` as a service manager would (SIGTERM)
/// and checks that it exits with status 0.
fn stop_worker(child: Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = finish(child, "worker");
    assert_eq!(output.status.code(), Some(0));
}

fn finish(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.try_wait().expect("the child can be polled").is_some() {
            return child.wait_with_output().expect("the child's output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs to the end (output collected by threads, so a full pipe cannot
/// block the program).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = ebbtide()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status = finish(child, &args.join(" ")).status;
    (
        status.code().expect("exited, not killed by a signal"),
        o.join().unwrap(),
        e.join().unwrap(),
    )
}

/// The lines of a child's pipe as they come, for waits with a deadline.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    rx
}

/// The value in the verdict row `name`.
fn row(stdout: &str, name: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(name) && l.contains(char::is_numeric))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{stdout}"));
    line.trim_start()[name.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("row {name:?} has no count: {line}"))
}

#[test]
fn size_reproduces_the_worked_example() {
    let (code, out, _) = run(&[
        "size",
        "--rate",
        "5000/s",
        "--latency",
        "80ms",
        "--instances",
        "4",
        "--headroom",
        "20%",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "1. In flight (Little's law): L = λ × W = 5000/s × 80.0 ms = 400"
    );
    assert_eq!(lines[1], "2. Per instance: 400 / 4 instances = 100");
    assert!(lines[2].starts_with("3. Headroom: 100 × (1 + 20%) = 120 → 120 workers per instance"));
    assert_eq!(
        lines[3],
        "Recommended: 120 workers per instance, 480 in all"
    );

    let (code, out, _) = run(&[
        "size",
        "--rate",
        "5000/s",
        "--latency",
        "80ms",
        "--instances",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["in_flight"], 400.0);
    assert_eq!(v["in_flight_per_instance"], 100.0);
    assert_eq!(v["recommended_workers_per_instance"], 120);
}

#[test]
fn survive_accounts_for_every_task_under_every_policy() {
    for policy in [
        "block",
        "reject",
        "drop-newest",
        "drop-oldest",
        "caller-runs",
    ] {
        let (code, out, _) = run(&[
            "survive",
            "--tasks",
            "30000",
            "--workers",
            "16",
            "--queue",
            "200",
            "--producers",
            "3",
            "--policy",
            policy,
            "--panic-rate",
            "1%",
            "--slow-rate",
            "0.05%",
            "--timeout",
            "20ms",
        ]);
        assert_eq!(code, 0, "{policy}:\n{out}");
        assert!(
            out.lines().last().unwrap().starts_with("survived:"),
            "{policy}:\n{out}"
        );
        for must_be_zero in [
            "ran twice",
            "lost",
            "threads leaked",
            "task closures leaked",
        ] {
            assert_eq!(row(&out, must_be_zero), 0, "{policy}: {must_be_zero}");
        }
        let submitted = row(&out, "submitted");
        assert_eq!(submitted, 30_000, "{policy}");
        let ended: u64 = [
            "completed",
            "panicked",
            "timed out",
            "dropped",
            "rejected",
            "abandoned",
            "still running",
        ]
        .iter()
        .map(|r| row(&out, r))
        .sum();
        assert_eq!(ended, submitted, "{policy}: every task ended one way");
        // 1% of 30,000 panic; under the policies that run every task all
        // of them do (a dropped one never runs).
        if matches!(policy, "block" | "caller-runs") {
            assert_eq!(row(&out, "dropped") + row(&out, "rejected"), 0);
            assert!(
                (240..=360).contains(&row(&out, "panicked")),
                "{policy}:\n{out}"
            );
        }
    }
}

#[test]
fn an_interrupt_stops_submitting_drains_and_prints_the_verdict() {
    for signal in ["-INT", "-TERM"] {
        interrupted_by(signal);
    }
}

fn interrupted_by(signal: &str) {
    let mut child = ebbtide()
        .args([
            "survive",
            "--tasks",
            "500000000",
            "--workers",
            "8",
            "--policy",
            "block",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress lines (stderr is not a terminal) show it is submitting.
    let rx = lines(child.stderr.take().unwrap());
    let first = rx.recv_timeout(PATIENCE).expect("a progress line");
    assert!(first.contains("submitted"), "{first}");
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = finish(child, signal);
    let out = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{out}");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("survived: interrupted after"), "{last}");
    assert!(row(&out, "submitted") < 500_000_000);
    assert_eq!(row(&out, "lost"), 0);
    assert_eq!(row(&out, "task closures leaked"), 0);
}

/// A load the program cannot produce or the pool cannot carry still ends:
/// a generator that cannot submit as fast as `--rate` stops at the run's
/// end and says so; arrivals unfinished `--drain` after the last one are
/// abandoned, and the run fails, its report written.
#[test]
fn simulate_ends_on_a_load_it_cannot_make_or_carry() {
    let dir = std::env::temp_dir().join(format!("ebbtide-overload-{}", std::process::id()));
    let out_dir = dir.join("behind");
    let (code, out, err) = run(&[
        "simulate",
        "--rate",
        "1e9/s",
        "--duration",
        "300ms",
        "--service-mean",
        "1us",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("warning: the generator could not submit as fast as --rate asked"),
        "{out}"
    );
    let summary = std::fs::read_to_string(out_dir.join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let summary = &summary["summary"];
    assert_eq!(summary["generator_fell_behind"], true);
    assert_eq!(summary["arrivals"], summary["completed"]);

    // About 1,500 arrivals of 5 ms of CPU each on one worker: seconds of
    // work, abandoned 100 ms after the last arrival.
    let out_dir = dir.join("abandoned");
    let (code, out, err) = run(&[
        "simulate",
        "--rate",
        "5000/s",
        "--duration",
        "300ms",
        "--service",
        "fixed",
        "--service-mean",
        "5ms",
        "--elastic",
        "1..1",
        "--drain",
        "100ms",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains(
            "FAILED: accepted arrivals had not finished 100.0 ms after the last one (--drain)"
        ),
        "{out}"
    );
    assert!(out_dir.join("report.html").exists());
    let summary = std::fs::read_to_string(out_dir.join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let summary = &summary["summary"];
    let (arrivals, completed) = (
        summary["arrivals"].as_u64().unwrap(),
        summary["completed"].as_u64().unwrap(),
    );
    assert!(completed < arrivals, "{completed} of {arrivals}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulate_writes_the_report_for_every_scenario() {
    let dir = std::env::temp_dir().join(format!("ebbtide-simulate-{}", std::process::id()));
    for scenario in [
        "steady",
        "burst",
        "ramp",
        "diurnal",
        "blocking-mix",
        "skewed-keys",
        "pipeline",
    ] {
        let out_dir = dir.join(scenario);
        let (code, out, err) = run(&[
            "simulate",
            "--scenario",
            scenario,
            "--duration",
            "600ms",
            "--rate",
            "500/s",
            "--keep-alive",
            "250ms",
            "--queue-wait-target",
            "5ms",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{scenario}:\n{out}\n{err}");
        assert!(out.contains("Little's law: λ·W"), "{out}");
        let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
        // Three charts, and two per-stage ones for a pipeline.
        let charts = if scenario == "pipeline" { 5 } else { 3 };
        assert_eq!(html.matches("<svg").count(), charts, "{scenario}");
        assert!(html.contains("Workers against load") && html.contains("Queue wait"));
        if scenario == "pipeline" {
            assert!(html.contains("Workers per stage") && html.contains("<td>enrich</td>"));
        }
        let csv = std::fs::read_to_string(out_dir.join("timeseries.csv")).unwrap();
        let mut lines = csv.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("t_s,workers,busy,queued,in_system"));
        let rows: Vec<Vec<f64>> = lines
            .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
            .collect();
        // Samples every 10 ms while the run lasts (fewer when the sampler
        // runs late: it skips what it missed), and one when it has ended,
        // with every arrival done. The run lasts at least its 600 ms.
        assert!(rows.len() >= 2, "{scenario}: {} samples", rows.len());
        assert!(
            rows.windows(2).all(|w| w[1][0] >= w[0][0]),
            "{scenario}: sample times never go back"
        );
        let end = rows.last().unwrap();
        assert!(end[0] >= 0.6, "{scenario}: the last sample at {} s", end[0]);
        assert_eq!(
            end[4], 0.0,
            "{scenario}: the last sample's tasks in the system"
        );
        assert!(
            rows.iter().all(|r| r.len() == 11 && r[1] >= 1.0),
            "every sample has a worker"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
                .unwrap();
        let s = &json["summary"];
        assert!(s["arrivals"].as_u64().unwrap() > 0);
        assert_eq!(
            s["arrivals"], s["completed"],
            "{scenario}: every arrival completed"
        );
        assert_eq!(s["scenario"], scenario);
        assert_eq!(
            (
                s["keep_alive_seconds"].as_f64(),
                s["queue_wait_target_ms"].as_f64()
            ),
            (Some(0.25), Some(5.0)),
            "{scenario}: the sizing settings used"
        );
        assert!(html.contains("keep-alive 0.250 s, queue-wait\ntarget 5.000 ms"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET /metrics, parsed by a Prometheus text parser.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let mut stream = TcpStream::connect(addr).expect("the endpoint accepts");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    match scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .value
    {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn metrics_are_served_during_the_run() {
    let mut child = ebbtide()
        .args([
            "survive",
            "--tasks",
            "40000",
            "--workers",
            "8",
            "--queue",
            "100000",
            "--policy",
            "block",
            "--metrics-addr",
            "127.0.0.1:0",
            "--linger",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let next = |what: &str| loop {
        let line = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no line {what}"));
        if line.contains(what) {
            return line;
        }
    };
    let serving = next("serving metrics on http://");
    let addr = serving
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    // The header comes once the pool exists and is being served; the
    // scrape lands while the run goes (or, if it was quicker, while it
    // lingers).
    next("survive:");
    let during = scrape(&addr);
    assert!(value(&during, "ebbtide_tasks_submitted_total") <= 40_000.0);
    next("survived:");
    next("lingering");
    let after = scrape(&addr);
    assert_eq!(value(&after, "ebbtide_tasks_submitted_total"), 40_000.0);
    let ended = value(&after, "ebbtide_tasks_completed_total")
        + value(&after, "ebbtide_tasks_panicked_total")
        + value(&after, "ebbtide_tasks_timed_out_total");
    assert_eq!(ended, 40_000.0);
    drop(child.stdin.take()); // closing stdin ends the lingering
    assert_eq!(finish(child, "lingering survive").status.code(), Some(0));
}

#[test]
fn bad_input_is_one_clear_error_with_status_2_and_nothing_started() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (
            vec!["simulate", "--scenario", "lunar"],
            "'--scenario <SCENARIO>'",
        ),
        (
            vec!["size", "--rate=-5/s", "--latency", "80ms"],
            "'--rate <RATE>': `-5/s` is not above zero",
        ),
        (
            vec!["size", "--rate", "0/s", "--latency", "80ms"],
            "'--rate <RATE>': `0/s` is not above zero",
        ),
        (
            vec!["size", "--rate", "5000/s", "--latency", "80"],
            "'--latency <LATENCY>': `80` has no unit",
        ),
        (
            vec!["simulate", "--duration", "ten"],
            "'--duration <DURATION>'",
        ),
        (
            vec!["simulate", "--keep-alive", "0s"],
            "'--keep-alive <KEEP_ALIVE>': `0s` is zero",
        ),
        (
            vec!["simulate", "--queue-wait-target", "5"],
            "'--queue-wait-target <QUEUE_WAIT_TARGET>': `5` has no unit",
        ),
        (
            vec!["survive", "--workers", "0"],
            "'--workers <WORKERS>': `0` is zero",
        ),
        (
            vec!["size", "--rate", "1e308/s", "--latency", "10ms"],
            "1e308/s × 0.01 s needs more than 2^53 workers: check --rate and --latency",
        ),
        (
            vec!["survive", "--panic-rate", "60%", "--slow-rate", "60%"],
            "--panic-rate (60%) and --slow-rate (60%) add up to more than 100%",
        ),
        (
            vec!["survive", "--elastic", "8..2"],
            "'--elastic <MIN..MAX>': `8..2` has its minimum above its maximum",
        ),
        (
            vec!["survive", "--metrics-addr", taken.as_str()],
            "'--metrics-addr <HOST:PORT>': cannot bind",
        ),
        (
            vec!["survive", "--metrics-addr", "nowhere"],
            "'--metrics-addr <HOST:PORT>'",
        ),
        (
            vec!["worker", "--stream", "s"],
            "the following required arguments were not provided",
        ),
        (
            vec![
                "worker",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--partitions",
                "0",
            ],
            "'--partitions <PARTITIONS>': `0` is zero",
        ),
        (
            vec![
                "produce",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--keys",
                "many",
            ],
            "'--keys <KEYS>': `many` is not a whole number",
        ),
        (
            vec![
                "worker",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--dead-letter-max-len",
                "0",
            ],
            "'--dead-letter-max-len <N>': `0` is zero",
        ),
        (
            vec![
                "worker",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--fail-rate",
                "150%",
            ],
            "'--fail-rate <FAIL_RATE>': `150%` is out of range",
        ),
        (
            vec![
                "dead-letters",
                "redrive",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
            ],
            "the following required arguments were not provided",
        ),
        (
            vec![
                "dead-letters",
                "remove",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--id",
                "yesterday",
            ],
            "'--id <ID>': `yesterday` is not a stream entry ID",
        ),
        (
            vec![
                "dead-letters",
                "redrive",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--id",
                "1-0",
                "--key",
                "k",
            ],
            "the argument '--id <ID>' cannot be used with '--key <KEY>'",
        ),
        (
            vec![
                "dead-letters",
                "list",
                "--redis",
                "redis://127.0.0.1/",
                "--stream",
                "s",
                "--count",
                "0",
            ],
            "'--count <COUNT>': `0` is zero",
        ),
    ];
    for (args, expected) in cases {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in:\n{err}"
        );
        assert!(err.trim_start().starts_with("error:"), "{args:?}: {err}");
        assert!(
            !out.contains("survive:") && !out.contains("simulate:"),
            "{args:?} started: {out}"
        );
    }
}

/// A broker that cannot be reached, and a stream name Redis keys cannot
/// carry: one error line each, status 1, nothing consumed.
#[test]
fn worker_and_produce_name_a_broker_they_cannot_use() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["worker", "--redis", "redis://127.0.0.1:1/", "--stream", "s"],
            "error: cannot connect to Redis at redis://127.0.0.1:1/",
        ),
        (
            &[
                "produce",
                "--redis",
                "redis://127.0.0.1:1/",
                "--stream",
                "s",
            ],
            "error: cannot connect to Redis at redis://127.0.0.1:1/",
        ),
        (
            &[
                "produce",
                "--redis",
                "redis://127.0.0.1:1/",
                "--stream",
                "a b",
            ],
            "error: invalid stream name \"a b\"",
        ),
    ];
    for (args, expected) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.starts_with(expected),
            "{args:?}: expected {expected:?} in:\n{err}"
        );
        assert!(
            !out.contains("acked") && !out.contains("sent"),
            "{args:?}: {out}"
        );
    }
}

#[path = "../../redis/tests/common/mod.rs"]
mod broker;

/// A redis-server of the test's own, or `None` (the test skips, saying
/// so) when none is installed, unless `EBBTIDE_REQUIRE_REDIS` is set.
fn redis_server() -> Option<broker::Server> {
    let server = broker::Server::start();
    if server.is_none() {
        assert!(
            !broker::required(),
            "redis-server is not installed, and EBBTIDE_REQUIRE_REDIS is set"
        );
        eprintln!("SKIPPED: redis-server is not installed (Debian: apt-get install redis-server)");
    }
    server
}

/// Runs `ebbtide produce` of `messages` over `keys` keys into `stream`;
/// returns what it printed.
fn produce(server: &broker::Server, stream: &str, messages: usize, keys: usize) -> String {
    let (messages, keys) = (messages.to_string(), keys.to_string());
    let (code, out, err) = run(&[
        "produce",
        "--redis",
        &server.url,
        "--stream",
        stream,
        "--messages",
        &messages,
        "--keys",
        &keys,
    ]);
    assert_eq!(code, 0, "{err}");
    out
}

/// A broker that drops `produce`'s connection mid-run: it stops with an
/// error that says how many messages were sent before it, and that many
/// (or up to one batch more) are in the stream.
#[test]
fn produce_says_how_far_it_got_when_its_connection_drops() {
    let Some(server) = redis_server() else {
        return;
    };
    let child = ebbtide()
        .args([
            "produce",
            "--redis",
            &server.url,
            "--stream",
            "cut",
            "--partitions",
            "2",
            "--messages",
            "1000000",
            "--rate",
            "2000/s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut con = server.con();
    let in_stream = |con: &mut redis::Connection| -> u64 {
        (0..2)
            .map(|p| {
                redis::cmd("XLEN")
                    .arg(format!("cut:{p}"))
                    .query::<u64>(con)
                    .unwrap()
            })
            .sum()
    };
    let deadline = Instant::now() + PATIENCE;
    while in_stream(&mut con) < 100 {
        assert!(Instant::now() < deadline, "produce sent nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(broker::drop_clients(&mut con), 1, "produce's connection");
    let out = finish(child, "produce");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // "…; N messages were sent before it, and the failed batch of M may
    // have been sent in part"
    let sent: u64 = err
        .split("; ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many were sent, in: {err}"));
    let batch: u64 = err
        .split("the failed batch of ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the failed batch, in: {err}"));
    assert!(err.starts_with("error: "), "{err}");
    let n = in_stream(&mut con);
    assert!(
        sent >= 100 && (sent..=sent + batch).contains(&n),
        "{sent} + {batch}: {n}"
    );
}

/// `produce` feeds a stream and `worker` consumes it: every message acked
/// (read back from Redis and from `/metrics`), and SIGTERM drains and
/// hands the partitions back.
#[test]
fn worker_consumes_what_produce_sends() {
    let Some(server) = redis_server() else {
        return;
    };
    let out = produce(&server, "demo", 3000, 30);
    assert!(
        out.starts_with("sent 3000 messages over 30 keys to \"demo\""),
        "{out}"
    );
    let mut child = ebbtide()
        .args([
            "worker",
            "--redis",
            &server.url,
            "--stream",
            "demo",
            "--io",
            "1ms",
        ])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let serving = rx.recv_timeout(PATIENCE).expect("the endpoint's line");
    let addr = serving
        .split("http://")
        .nth(1)
        .unwrap_or_else(|| panic!("{serving}"))
        .trim_end_matches("/metrics")
        .to_string();
    let mut con = server.con();
    let deadline = Instant::now() + PATIENCE;
    while broker::acked(&mut con, "demo", 16, "ebbtide") < 3000 {
        assert!(Instant::now() < deadline, "not all acked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let acked_served = || {
        scrape(&addr)
            .samples
            .iter()
            .filter(|s| s.metric == "ebbtide_redis_partition_acked_total")
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            })
            .sum::<f64>()
    };
    while acked_served() < 3000.0 {
        assert!(
            Instant::now() < deadline,
            "/metrics never showed 3000 acked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(acked_served(), 3000.0);
    stop_worker(child);
    // The reader thread ends at the pipe's end, which came with the exit.
    let rest: Vec<String> = rx.iter().collect();
    let last = rest.last().expect("the final line");
    assert_eq!(
        last,
        "stopped: acked 3000, retried 0, dead-lettered 0, redelivered 0, partitions taken 16 and handed back 16"
    );
    assert_eq!(broker::pending_now(&mut con, "demo", 16, "ebbtide"), 0);
}

/// What a consumer gave up on, worked through the program: listed page by
/// page, one removed, one redriven by ID, those of one error, then the
/// rest; each redriven message is then consumed exactly once.
#[test]
fn dead_letters_are_listed_redriven_and_removed() {
    use ebbtide_redis::{Consumer, Producer, Stream};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    let Some(server) = redis_server() else {
        return;
    };
    let stream = Stream::new("cli-dead").unwrap();
    let sent: BTreeSet<(String, String)> = ["a", "b", "c"]
        .iter()
        .flat_map(|k| (1..=2).map(move |i| (k.to_string(), format!("{k}{i}"))))
        .collect();
    let mut producer = Producer::connect(&server.url, stream.clone()).unwrap();
    producer.send_batch(sent.iter().cloned()).unwrap();
    let consume = |fail: bool, group_total: u64| {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&ran);
        let consumer = Consumer::builder(&server.url, stream.clone())
            .retry(ebbtide::RetryPolicy::fixed(Duration::from_millis(1)).max_attempts(1))
            .start(move |m| {
                let key = String::from_utf8_lossy(m.key()).into_owned();
                if fail {
                    return Err(format!("no {key} today"));
                }
                let payload = String::from_utf8_lossy(m.payload()).into_owned();
                r.lock().unwrap().push((key, payload));
                Ok(())
            })
            .unwrap();
        let mut con = server.con();
        let deadline = Instant::now() + PATIENCE;
        while broker::acked(&mut con, "cli-dead", 16, "ebbtide") < group_total
            || broker::pending_now(&mut con, "cli-dead", 16, "ebbtide") > 0
        {
            assert!(Instant::now() < deadline, "not all acked");
            std::thread::sleep(Duration::from_millis(20));
        }
        consumer.stop().unwrap();
        let ran = ran.lock().unwrap().clone();
        ran
    };
    assert!(consume(true, 6).is_empty());

    let target = ["--redis", server.url.as_str(), "--stream", "cli-dead"];
    let dl = |action: &str, more: &[&str]| {
        let mut args = vec!["dead-letters", action];
        args.extend_from_slice(&target);
        args.extend_from_slice(more);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .filter(|l| !l.starts_with("more after"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let first = dl("list", &["--count", "4"]);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines[0], "6 dead letters in \"cli-dead:dead\"", "{first}");
    assert_eq!(lines.len(), 6, "{first}");
    let mut all = ids(&first);
    assert_eq!(lines[5], format!("more after: --after {}", all[3]));
    for line in &lines[1..5] {
        let key = line.split("key \"").nth(1).unwrap().chars().next().unwrap();
        assert!(line.contains("  attempts 1  consumer "), "{line}");
        assert!(line.ends_with(&format!("error: no {key} today")), "{line}");
    }
    let second = dl("list", &["--count", "4", "--after", all[3].as_str()]);
    all.extend(ids(&second));
    assert_eq!(all.len(), 6, "{second}");
    assert!(!second.contains("more after"), "{second}");

    assert_eq!(
        dl("remove", &["--id", &all[0]]).trim(),
        format!("removed {}", all[0])
    );
    assert_eq!(
        dl("remove", &["--id", &all[0]]).trim(),
        format!("no dead letter {}", all[0])
    );
    let one = dl("redrive", &["--id", &all[1]]);
    assert!(one.starts_with(&format!("redrove {} as ", all[1])), "{one}");
    // Key of each dead letter, from the listing.
    let key_of = |id: &str| -> String {
        let line = first
            .lines()
            .chain(second.lines())
            .find(|l| l.starts_with(id))
            .unwrap();
        line.split("key \"").nth(1).unwrap()[..1].to_string()
    };
    let c_left = all[2..].iter().filter(|id| key_of(id) == "c").count();
    assert_eq!(
        dl("redrive", &["--all", "--error-contains", "no c "]).trim(),
        format!(
            "redrove {c_left} dead letters\nleft {} that did not match",
            4 - c_left
        )
    );
    assert_eq!(
        dl("redrive", &["--all", "--key", "c"]).trim(),
        format!(
            "redrove 0 dead letters\nleft {} that did not match",
            4 - c_left
        )
    );
    assert_eq!(
        dl("redrive", &["--all"]).trim(),
        format!("redrove {} dead letters", 4 - c_left)
    );
    assert_eq!(
        dl("list", &[]).trim(),
        "0 dead letters in \"cli-dead:dead\""
    );

    // The five redriven run once each; the removed one is gone.
    let removed_line = lines[1];
    let ran: BTreeSet<(String, String)> = consume(false, 11).into_iter().collect();
    assert_eq!(ran.len(), 5);
    let missing: Vec<_> = sent.difference(&ran).collect();
    assert_eq!(missing.len(), 1, "{ran:?}");
    assert!(
        removed_line.contains(&format!("payload \"{}\"", missing[0].1)),
        "{removed_line}"
    );
}

/// Runs `ebbtide worker` on `stream` with `extra` flags until the group
/// has acked `total` entries, then stops it with SIGTERM; returns its last
/// line.
fn work_until_acked(server: &broker::Server, stream: &str, extra: &[&str], total: u64) -> String {
    let mut child = ebbtide()
        .args(["worker", "--redis", &server.url, "--stream", stream])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let mut con = server.con();
    let deadline = Instant::now() + PATIENCE;
    while broker::acked(&mut con, stream, 16, "ebbtide") < total
        || broker::pending_now(&mut con, stream, 16, "ebbtide") > 0
    {
        assert!(Instant::now() < deadline, "not all acked");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_worker(child);
    rx.iter().last().expect("the final line")
}

/// The figure after `name` in the worker's final line.
fn stopped_figure(line: &str, name: &str) -> u64 {
    line.split(&format!("{name} "))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// `worker --fail-rate` fails the same messages on every attempt: each is
/// retried four times, then dead-lettered; once the worker runs without
/// it, `dead-letters redrive --all` finishes the job, every message acked.
#[test]
fn a_failing_worker_dead_letters_and_a_redrive_finishes_the_job() {
    let Some(server) = redis_server() else {
        return;
    };
    produce(&server, "cli-fail", 300, 100);
    let last = work_until_acked(&server, "cli-fail", &["--fail-rate", "10%"], 300);
    assert!(last.starts_with("stopped: acked 300, "), "{last}");
    let dead = stopped_figure(&last, "dead-lettered");
    // The demo payloads are alike: a failing key fails all 3 of its messages.
    assert!(dead > 0 && dead < 300 && dead.is_multiple_of(3), "{last}");
    assert_eq!(stopped_figure(&last, "retried"), 4 * dead, "{last}");
    let target = ["--redis", server.url.as_str(), "--stream", "cli-fail"];
    let mut args = vec!["dead-letters", "list", "--count", "1000"];
    args.extend_from_slice(&target);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let letters: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(letters.len() as u64, dead, "{out}");
    for l in &letters {
        assert!(l.contains("  attempts 5  "), "{l}");
        assert!(l.contains("error: simulated failure (--fail-rate)"), "{l}");
    }
    let mut args = vec!["dead-letters", "redrive", "--all"];
    args.extend_from_slice(&target);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("redrove {dead} dead letters"));
    let last = work_until_acked(&server, "cli-fail", &[], 300 + dead);
    assert!(
        last.starts_with(&format!(
            "stopped: acked {dead}, retried 0, dead-lettered 0, "
        )),
        "{last}"
    );
}
