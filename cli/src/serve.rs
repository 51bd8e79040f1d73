//! `--metrics-addr`: the pool's Prometheus text at `/metrics`, served by a
//! small blocking HTTP server on its own thread while the program runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ebbtide::PoolHandle;

/// What the endpoint serves: nothing until a run has started, then its
/// text (a pool's metrics, or every stage's of a pipeline).
#[derive(Clone, Default)]
pub struct Source(Arc<Mutex<Option<Text>>>);

type Text = Arc<dyn Fn() -> String + Send + Sync>;

impl Source {
    pub fn set(&self, pool: PoolHandle) {
        self.set_text(move || pool.metrics().to_prometheus("ebbtide"));
    }

    pub fn set_text(&self, text: impl Fn() -> String + Send + Sync + 'static) {
        *self.0.lock().unwrap() = Some(Arc::new(text));
    }

    fn text(&self) -> String {
        let text = self.0.lock().unwrap().clone();
        text.map(|t| t()).unwrap_or_default()
    }
}

pub struct Server {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; `addr` then says which).
    ///
    /// # Errors
    /// The address cannot be bound, with the reason.
    pub fn start(addr: SocketAddr, source: Source) -> Result<Server, String> {
        let http = tiny_http::Server::http(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("{addr} is not an IP address"))?;
        let http = Arc::new(http);
        let serving = Arc::clone(&http);
        let thread = std::thread::Builder::new()
            .name("ebbtide-metrics-http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let path = request.url().split('?').next().unwrap_or("");
                    let response = if path == "/metrics" {
                        let header = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(source.text()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    // A client that hung up is its own business.
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(Server {
            http,
            thread: Some(thread),
            addr,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
