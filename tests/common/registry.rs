//! A test Schema Registry: a std `TcpListener` and a thread speaking the subset of the
//! Confluent Schema Registry REST API that verdict uses, with the documented request and
//! response shapes (Confluent Platform "Schema Registry API reference",
//! docs.confluent.io/platform/6.1/schema-registry/develop/api.html; the same shapes in
//! Redpanda's compatible API docs):
//!
//! * `GET /schemas/ids/{id}` → `{"schema": "<schema JSON as a string>", "schemaType": "AVRO"}`,
//!   404 `{"error_code": 40403, "message": "Schema 7 not found"}`;
//! * `POST /subjects/{subject}/versions` with `{"schema": "...", "schemaType": "AVRO"}` →
//!   `{"id": N}` (the same schema gets the same id under any subject), 409
//!   `{"error_code": 409, "message": "Schema being registered is incompatible ..."}`;
//! * `GET /subjects` → `["a-value", ...]`;
//! * 401 `{"error_code": 401, "message": "Unauthorized"}` without the configured basic auth.
//!
//! Replies carry `Content-Type: application/vnd.schemaregistry.v1+json`. No real registry can
//! run here (Confluent's needs a JVM and Maven; Karapace is not on PyPI). The server counts
//! requests per path so a test can assert caching, and can be taken down (connections are
//! then closed unanswered, as a registry that is down or unreachable).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the registry holds and has seen.
#[derive(Default)]
pub struct RegistryState {
    /// id → schema text.
    pub schemas: BTreeMap<u32, String>,
    /// subject → ids registered under it.
    pub subjects: BTreeMap<String, Vec<u32>>,
    /// Subjects where any new registration is refused as incompatible.
    pub incompatible: HashSet<String>,
    /// Requests by "METHOD path".
    pub requests: HashMap<String, u32>,
    /// Every Authorization header received.
    pub auth_seen: Vec<String>,
    /// The basic auth the server requires (user, password), if any.
    pub basic_auth: Option<(String, String)>,
    next_id: u32,
}

/// A running test registry on 127.0.0.1.
pub struct TestRegistry {
    pub port: u16,
    pub state: Arc<Mutex<RegistryState>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl TestRegistry {
    /// Starts an empty registry (ids it assigns start at 1000).
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(RegistryState { next_id: 1000, ..Default::default() }));
        let (down, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (s, d, st) = (state.clone(), down.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(conn); // down: the connection closes unanswered
                    continue;
                }
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Self { port, state, down, stop }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Puts a schema under `id` (as if registered by a producer).
    pub fn put(&self, id: u32, schema: &str) {
        self.state.lock().unwrap().schemas.insert(id, schema.to_string());
    }

    /// Requires basic auth.
    pub fn require_auth(&self, user: &str, password: &str) {
        self.state.lock().unwrap().basic_auth = Some((user.into(), password.into()));
    }

    /// Takes the registry down (true) or up again (false).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Requests seen for "METHOD path".
    pub fn count(&self, request: &str) -> u32 {
        self.state.lock().unwrap().requests.get(request).copied().unwrap_or(0)
    }

    /// The ids registered under `subject`.
    pub fn ids(&self, subject: &str) -> Vec<u32> {
        self.state.lock().unwrap().subjects.get(subject).cloned().unwrap_or_default()
    }

    /// The schema text under `id`.
    pub fn schema(&self, id: u32) -> Option<String> {
        self.state.lock().unwrap().schemas.get(&id).cloned()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn serve(conn: TcpStream, state: &Mutex<RegistryState>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut length, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => auth = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let (status, reply) = route(state, &method, &path, auth, &body);
    let text = reply.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn route(
    state: &Mutex<RegistryState>,
    method: &str,
    path: &str,
    auth: Option<String>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    use serde_json::json;
    let mut s = state.lock().unwrap();
    *s.requests.entry(format!("{method} {path}")).or_default() += 1;
    if let Some(a) = &auth {
        s.auth_seen.push(a.clone());
    }
    if let Some((u, p)) = &s.basic_auth {
        if auth.as_deref() != Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes())).as_str()) {
            return (401, json!({"error_code": 401, "message": "Unauthorized"}));
        }
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["schemas", "ids", id]) => match id.parse::<u32>().ok().and_then(|id| s.schemas.get(&id)) {
            Some(schema) => (200, json!({"schema": schema, "schemaType": "AVRO"})),
            None => (404, json!({"error_code": 40403, "message": format!("Schema {id} not found")})),
        },
        ("GET", ["subjects"]) => (200, json!(s.subjects.keys().collect::<Vec<_>>())),
        ("POST", ["subjects", subject, "versions"]) => {
            let subject = subject.replace("%2F", "/");
            let req: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return (422, json!({"error_code": 42201, "message": format!("Invalid schema: {e}")})),
            };
            let Some(schema) = req["schema"].as_str().map(str::to_string) else {
                return (422, json!({"error_code": 42201, "message": "Invalid schema: no 'schema'"}));
            };
            if s.incompatible.contains(&subject) {
                let message = format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [READER_FIELD_MISSING_DEFAULT_VALUE]"
                );
                return (409, json!({"error_code": 409, "message": message}));
            }
            let id = match s.schemas.iter().find(|(_, t)| **t == schema) {
                Some((id, _)) => *id,
                None => {
                    let id = s.next_id;
                    s.next_id += 1;
                    s.schemas.insert(id, schema);
                    id
                }
            };
            let ids = s.subjects.entry(subject).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
            (200, json!({"id": id}))
        }
        _ => (404, json!({"error_code": 404, "message": "HTTP 404 Not Found"})),
    }
}
