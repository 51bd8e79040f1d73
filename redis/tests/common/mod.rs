//! A redis-server of the test's own on a free loopback port, and consumer
//! processes: this executable run again in child mode.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub url: String,
    port: u16,
    persistent: bool,
    _dir: TempDir,
}

/// Whether a missing redis-server fails the run (under CI) or skips it.
pub fn required() -> bool {
    std::env::var_os("EBBTIDE_REQUIRE_REDIS").is_some()
}

impl Server {
    /// Starts redis-server on a free port, without persistence; `None`
    /// when it is not installed.
    pub fn start() -> Option<Server> {
        Server::start_with(false)
    }

    /// Starts redis-server on a free port with an append-only file synced
    /// at every write (an acknowledged write survives a crash), so that
    /// [`restart`](Self::restart) finds what it held; `None` when it is
    /// not installed.
    pub fn start_persistent() -> Option<Server> {
        Server::start_with(true)
    }

    fn start_with(persistent: bool) -> Option<Server> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return None;
        }
        let dir = TempDir::new("redis");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            // `None`: the port was taken meanwhile; try another.
            if let Some(child) = launch(port, &dir, persistent) {
                return Some(Server {
                    child,
                    url: format!("redis://127.0.0.1:{port}/"),
                    port,
                    persistent,
                    _dir: dir,
                });
            }
        }
        panic!("redis-server did not start on a free port in 5 tries");
    }

    /// Kills the server (SIGKILL: a crash, nothing flushed on the way
    /// out), waits `down`, and starts it again on the same port and
    /// directory. A persistent server comes back with what it held.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = launch(self.port, &self._dir, self.persistent) {
                self.child = child;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to the test's redis-server")
    }
}

/// Starts redis-server on `port` in `dir` and waits until it answers;
/// `None` if it exited first (the port is taken).
fn launch(port: u16, dir: &TempDir, persistent: bool) -> Option<Child> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", ""])
        .args(["--dir", dir.path.to_str().expect("a UTF-8 path")]);
    if persistent {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        let ok = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if ok.is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ebbtide-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A consumer process: this executable in child mode, configured by
/// environment variables; it prints `ready` once started and `stopped`
/// after a graceful stop, and stops when its standard input closes.
pub struct Proc {
    pub child: Child,
    pub name: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, env: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("the test executable"));
        cmd.env("EBBTIDE_CHILD", "consumer").env("CHILD_NAME", name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a consumer process");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child,
            name: name.to_string(),
            lines,
        };
        p.expect_line("ready", Duration::from_secs(30));
        p
    }

    /// Waits for a line starting with `prefix`; the line.
    pub fn expect_line(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!("{}: no {prefix:?} line within {within:?}", self.name),
            }
        }
    }

    /// Sends it a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.child.id());
    }

    /// SIGTERM, then waits for its graceful stop.
    pub fn terminate(&mut self) -> String {
        self.signal("TERM");
        let line = self.expect_line("stopped", Duration::from_secs(60));
        let _ = self.child.wait();
        line
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL a consumer");
        let _ = self.child.wait();
    }

    /// Closes its standard input (a graceful stop) and waits.
    pub fn finish(mut self) -> String {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let line = self.expect_line("stopped", Duration::from_secs(60));
        let _ = self.child.wait();
        line
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Acked entries over the stream's partitions: entries read by the group
/// less those pending.
pub fn acked(con: &mut redis::Connection, stream: &str, partitions: u32, group: &str) -> u64 {
    let mut total = 0;
    for p in 0..partitions {
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(format!("{stream}:{p}"))
            .query(con)
            .unwrap_or(redis::Value::Nil);
        let (read, pending) = group_field(&groups, group);
        total += read.saturating_sub(pending);
    }
    total
}

/// A field of the group's entry in `XINFO GROUPS` of `stream`, if an
/// integer.
pub fn group_info(
    con: &mut redis::Connection,
    stream: &str,
    group: &str,
    field: &str,
) -> Option<i64> {
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(con)
        .ok()?;
    let redis::Value::Array(groups) = groups else {
        return None;
    };
    for g in groups {
        let redis::Value::Array(f) = g else { continue };
        let get = |name: &str| {
            f.chunks(2).find_map(|kv| match (&kv[0], kv.get(1)) {
                (redis::Value::BulkString(k), Some(v)) if k == name.as_bytes() => Some(v.clone()),
                (redis::Value::SimpleString(k), Some(v)) if k == name => Some(v.clone()),
                _ => None,
            })
        };
        if !matches!(get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()) {
            continue;
        }
        return match get(field) {
            Some(redis::Value::Int(i)) => Some(i),
            _ => None,
        };
    }
    None
}

fn group_field(v: &redis::Value, group: &str) -> (u64, u64) {
    use redis::Value;
    let Value::Array(groups) = v else {
        return (0, 0);
    };
    for g in groups {
        let Value::Array(f) = g else { continue };
        let get = |name: &str| {
            f.chunks(2).find_map(|kv| match (&kv[0], kv.get(1)) {
                (Value::BulkString(k), Some(v)) if k == name.as_bytes() => Some(v.clone()),
                (Value::SimpleString(k), Some(v)) if k == name => Some(v.clone()),
                _ => None,
            })
        };
        let is_it = matches!(get("name"), Some(Value::BulkString(n)) if n == group.as_bytes());
        if !is_it {
            continue;
        }
        let int = |v: Option<Value>| match v {
            Some(Value::Int(i)) => i.max(0) as u64,
            _ => 0,
        };
        return (int(get("entries-read")), int(get("pending")));
    }
    (0, 0)
}

/// Entries pending (read, not acked) over all partitions, read in one
/// transaction so that the sum is one moment's.
pub fn pending_now(con: &mut redis::Connection, stream: &str, partitions: u32, group: &str) -> u64 {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for p in 0..partitions {
        pipe.cmd("XPENDING").arg(format!("{stream}:{p}")).arg(group);
    }
    let replies: Vec<redis::Value> = pipe.query(con).unwrap_or_default();
    replies
        .iter()
        .map(|r| match r {
            redis::Value::Array(a) => match a.first() {
                Some(redis::Value::Int(n)) => *n as u64,
                _ => 0,
            },
            _ => 0,
        })
        .sum()
}

/// Drops every client connection of the server but `con`'s own (as a
/// failover or a proxy restart would); returns how many it dropped.
pub fn drop_clients(con: &mut redis::Connection) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(con)
        .expect("CLIENT KILL")
}

/// The entries of stream `key`, oldest first: each entry's ID and its
/// fields as text (a field that is not a string is an error).
pub fn entries(
    con: &mut redis::Connection,
    key: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields = e
                .map
                .iter()
                .map(|(k, v)| match v {
                    redis::Value::BulkString(b) => {
                        (k.clone(), String::from_utf8_lossy(b).into_owned())
                    }
                    other => panic!("entry {} of {key}: field {k} is {other:?}", e.id),
                })
                .collect();
            (e.id, fields)
        })
        .collect()
}
