//! Kafka security (`[kafka.security]`) and zstd as a user meets them, against real servers
//! where one runs here:
//!
//! * every SASL mechanism and the TLS settings are accepted by librdkafka when verdict
//!   creates its consumer and producer, and by `check-config`, which names every problem;
//! * a real TLS handshake, with a CA, server and client certificates the test makes with the
//!   openssl CLI. Tansu 0.6 has no working TLS listener (`--cert` and `--key` refuse each
//!   other), so socat terminates TLS in front of it, verifying the client certificate, and
//!   Tansu advertises socat's port: records go both ways through it, and a client that
//!   trusts another CA is refused;
//! * SASL SCRAM-SHA-512 over that TLS against Tansu with `--authentication`: the SCRAM
//!   exchange runs and the broker refuses the login ("unknown-user": Tansu 0.6 keeps users in
//!   memory and cannot create one once it requires authentication, and offers no PLAIN, so
//!   no SASL login succeeds here); the error is clear and neither it nor any log line shows
//!   the password;
//! * OAUTHBEARER with an OAuth token endpoint: every client asks a token endpoint (a test
//!   server here: no broker that runs here takes OAUTHBEARER, so the SASL exchange itself is
//!   not exercised) with the client-credentials grant, and a refused secret is a clear error
//!   that never shows it;
//! * zstd: records produced with `compression = "zstd"` are read back through the mock cluster.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::Message;
use verdict::config::{KafkaConfig, KafkaSecurity};
use verdict::telemetry::Metrics;

const KEY_PASSWORD: &str = "k3y-pa55-7e1c";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A test CA, a server certificate for `localhost` and a client certificate whose key is
/// encrypted with [`KEY_PASSWORD`] (in the file `key-password`), plus a second, unrelated CA.
struct Pki(tempfile::TempDir);

impl Pki {
    fn new() -> Self {
        let pki = Self(tempfile::tempdir().unwrap());
        std::fs::write(pki.path("san.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        std::fs::write(pki.path("key-password"), format!("{KEY_PASSWORD}\n")).unwrap();
        for ca in ["ca", "other-ca"] {
            pki.openssl(&format!(
                "req -x509 -newkey rsa:2048 -days 2 -nodes -keyout {ca}.key -out {ca}.pem -subj /CN=verdict-test-{ca}"
            ));
        }
        let encrypted = format!("-passout pass:{KEY_PASSWORD}");
        for (who, name, protect) in [("server", "localhost", "-nodes"), ("client", "verdict", encrypted.as_str())] {
            pki.openssl(&format!("req -newkey rsa:2048 {protect} -keyout {who}.key -out {who}.csr -subj /CN={name}"));
            pki.openssl(&format!(
                "x509 -req -in {who}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {who}.pem -days 2 \
                 -extfile san.cnf"
            ));
        }
        pki
    }

    /// Runs `openssl` with `command` (split at whitespace) in the directory.
    fn openssl(&self, command: &str) {
        let out = Command::new("openssl")
            .current_dir(self.0.path())
            .args(command.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .expect("the openssl CLI (scripts/test.sh installs it)");
        assert!(out.status.success(), "openssl {command}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).display().to_string()
    }
}

/// A process started by a test, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Tansu on a free port, advertising `localhost:advertised` (the TLS terminator in front).
fn tansu(advertised: u16, authentication: bool) -> (Process, u16) {
    let fetched = Command::new(crate_path("scripts/broker.sh")).arg("fetch").status().expect("scripts/broker.sh");
    assert!(fetched.success(), "the Tansu broker could not be fetched");
    let port = free_port();
    let mut cmd = Command::new(crate_path(".cache/tansu/tansu"));
    cmd.args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args(["--advertised-listener-url", &format!("tcp://localhost:{advertised}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if authentication {
        cmd.arg("--authentication");
    }
    let process = Process(cmd.spawn().expect("tansu"));
    wait_for("tansu to listen", Duration::from_secs(10), || listening(port));
    (process, port)
}

/// socat terminating TLS on `port` (the server certificate; client certificates signed by the
/// test CA required when `verify_client`) and forwarding to `upstream`.
fn tls_terminator(pki: &Pki, port: u16, upstream: u16, verify_client: bool) -> Process {
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify={}",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
        u8::from(verify_client)
    );
    let child = Command::new("socat")
        .args([listen, format!("TCP:127.0.0.1:{upstream}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat (scripts/test.sh installs it)");
    let process = Process(child);
    wait_for("socat to listen", Duration::from_secs(10), || listening(port));
    process
}

/// The Kafka section of a deployment reaching `localhost:port` with `security`.
/// TLS with the test CA and the client certificate (its key encrypted, the password in a file).
fn tls_client(pki: &Pki) -> KafkaSecurity {
    KafkaSecurity {
        protocol: "ssl".into(),
        ca_file: pki.path("ca.pem"),
        cert_file: pki.path("client.pem"),
        key_file: pki.path("client.key"),
        key_password_file: pki.path("key-password"),
        ..Default::default()
    }
}

fn kafka_at(port: u16, group: &str, topic: &str, security: KafkaSecurity) -> KafkaConfig {
    // socat listens on IPv4 only; `localhost` may resolve to ::1 first.
    let v4 = [("broker.address.family".to_string(), "v4".to_string())];
    KafkaConfig {
        brokers: format!("localhost:{port}"),
        group_id: group.into(),
        input_topics: vec![topic.into()],
        security,
        consumer: v4.clone().into_iter().chain([("session.timeout.ms".into(), "6000".into())]).collect(),
        producer: v4.into_iter().collect(),
        ..Default::default()
    }
}

fn consumer(kafka: &KafkaConfig) -> Arc<verdict::consume::KafkaConsumer> {
    verdict::consume::create_consumer(kafka, 1000, Metrics::new(), Arc::new(AtomicUsize::new(0)))
        .expect("librdkafka accepts the consumer's configuration")
}

fn publisher(kafka: &KafkaConfig) -> verdict::publish::Publisher {
    verdict::publish::Publisher::new(kafka, &Default::default(), Metrics::new())
        .expect("librdkafka accepts the producer's configuration")
}

/// Sends `payloads` with verdict's producer and waits for every acknowledgement.
fn publish(kafka: &KafkaConfig, topic: &str, payloads: &[Vec<u8>]) {
    let publisher = publisher(kafka);
    let deliveries = verdict::publish::Deliveries::default();
    for p in payloads {
        publisher.send(topic, Some(b"k"), p, None, &deliveries).unwrap();
    }
    let waited = deliveries.wait(std::time::Duration::from_secs(60));
    assert_eq!(waited, verdict::publish::delivery::Waited::Done, "every record has its delivery report");
    let failed: Vec<String> = deliveries.take_failed().iter().map(|(e, _)| e.to_string()).collect();
    assert!(failed.is_empty(), "delivered: {failed:?}");
}

#[test]
fn records_cross_a_real_tls_handshake_with_a_client_certificate() {
    logs(); // captured from the start
    let pki = Pki::new();
    let tls_port = free_port();
    let (_tansu, plain_port) = tansu(tls_port, false);
    let _tls = tls_terminator(&pki, tls_port, plain_port, true);
    let kafka = kafka_at(tls_port, "verdict-tls", "tls-events", tls_client(&pki));
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("{{\"event_id\":\"tls-{i}\"}}").into_bytes()).collect();
    publish(&kafka, "tls-events", &payloads);

    let consumer = consumer(&kafka);
    let mut read = Vec::new();
    let start = Instant::now();
    while read.len() < payloads.len() && start.elapsed() < Duration::from_secs(40) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => read.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => panic!("consuming through TLS: {e}"),
            None => {}
        }
    }
    assert_eq!(read, payloads, "every record produced through TLS is consumed through TLS, in order");

    // A client that trusts another CA refuses the broker's certificate, and says why.
    let mut distrusting = kafka.clone();
    distrusting.security.ca_file = pki.path("other-ca.pem");
    let refused = logged_error(&distrusting, "certificate verify failed");
    assert!(refused.contains("SSL handshake failed"), "{refused}");
}

/// Runs a consumer of `kafka` as the consume loop does (its errors go to the log) until a log
/// line contains `expected`, and returns that line; panics after 20 s, showing the log.
fn logged_error(kafka: &KafkaConfig, expected: &str) -> String {
    let consumer = consumer(kafka);
    let start = Instant::now();
    loop {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            consumer.context().poll_error(&e);
        }
        let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| l.contains(expected)) {
            return line.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no log line with `{expected}` in 20 s:\n{text}");
    }
}

/// Every log line of this test binary (librdkafka's through verdict's contexts included).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_writer(move || Capture(writer.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_refused_scram_login_over_tls_fails_clearly_and_never_shows_the_password() {
    let logs = logs();
    let pki = Pki::new();
    let tls_port = free_port();
    let (_tansu, plain_port) = tansu(tls_port, true);
    let _tls = tls_terminator(&pki, tls_port, plain_port, false);
    let wrong = "wr0ng-scram-pa55-3b9d";
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{wrong}\n")).unwrap();
    let security = KafkaSecurity {
        protocol: "sasl_ssl".into(),
        sasl_mechanism: "SCRAM-SHA-512".into(),
        username: "verdict".into(),
        password_file: password_file.display().to_string(),
        ca_file: pki.path("ca.pem"),
        ..Default::default()
    };
    let kafka = kafka_at(tls_port, "verdict-sasl", "sasl-events", security);
    // librdkafka: "SASL authentication error: SASL SCRAM authentication failed: broker
    // responded with unknown-user (after 49ms in state AUTH_REQ)".
    let error = logged_error(&kafka, "SASL authentication error");
    assert!(error.contains("SCRAM authentication failed"), "says what failed: {error}");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!text.contains(wrong), "the logs show the password:\n{text}");
}

#[test]
fn zstd_records_are_produced_and_consumed_through_the_mock_cluster() {
    let mock = verdict::demo::MockKafka::start(1);
    mock.create_topic("zstd-events", 2);
    let kafka = KafkaConfig { brokers: mock.bootstrap().into(), compression: "zstd".into(), ..Default::default() };
    let payloads: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("{{\"event_id\":\"z-{i}\",\"note\":\"{}\"}}", "abc".repeat(40)).into_bytes())
        .collect();
    publish(&kafka, "zstd-events", &payloads);
    let mut read: Vec<Vec<u8>> =
        mock.read_all("zstd-events", Duration::from_secs(2)).into_iter().map(|m| m.payload).collect();
    read.sort();
    let mut expected = payloads.clone();
    expected.sort();
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "the zstd records read back differ from those sent");
}

#[path = "security/startup.rs"]
mod startup;

/// Writes `text` into `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A one-route OAuth token endpoint: answers every POST with `status` and `body`, and keeps
/// each request's head and body.
fn token_endpoint(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/oauth2/token", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut head, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut request_body = vec![0; length];
            reader.read_exact(&mut request_body).ok();
            keep.lock().unwrap().push(format!("{head}\n{}", String::from_utf8_lossy(&request_body)));
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn oauth_security(endpoint: &str, secret_file: &Path) -> KafkaSecurity {
    KafkaSecurity {
        protocol: "sasl_plaintext".into(),
        sasl_mechanism: "OAUTHBEARER".into(),
        oauth_token_endpoint: endpoint.into(),
        oauth_client_id: "verdict-svc".into(),
        oauth_client_secret_file: secret_file.display().to_string(),
        oauth_scope: "kafka read".into(),
        ..Default::default()
    }
}

#[test]
fn oauthbearer_clients_fetch_their_token_with_the_client_credentials_grant() {
    // A JWT whose subject is the principal: {"alg":"none"} . {"sub":"svc-principal","exp":4102444800} .
    let (url, seen) = token_endpoint(
        200,
        r#"{"access_token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJzdmMtcHJpbmNpcGFsIiwiZXhwIjo0MTAyNDQ0ODAwfQ.","token_type":"Bearer","expires_in":300}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "s3cr3t-7f2a\n").unwrap();
    // No broker listens there: the token is asked for when a client starts, before it connects.
    let kafka = kafka_at(free_port(), "verdict-oauth", "oauth-events", oauth_security(&url, &secret_file));
    let started = Instant::now();
    let consumer = consumer(&kafka);
    let publisher = publisher(&kafka);
    while seen.lock().unwrap().len() < 2 && started.elapsed() < Duration::from_secs(20) {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    drop((consumer, publisher));
    let requests = seen.lock().unwrap().clone();
    assert!(requests.len() >= 2, "the consumer and the producer each ask for a token: {requests:?}");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("verdict-svc:s3cr3t-7f2a");
    for r in &requests {
        assert!(r.starts_with("POST /oauth2/token "), "{r}");
        assert!(
            r.contains(&format!("authorization: Basic {basic}"))
                || r.contains(&format!("Authorization: Basic {basic}")),
            "{r}"
        );
        assert!(r.ends_with("grant_type=client_credentials&scope=kafka%20read"), "{r}");
    }
}

#[test]
fn a_refused_oauth_client_secret_fails_clearly_and_never_shows_it() {
    let logs = logs();
    let (url, seen) =
        token_endpoint(401, r#"{"error":"invalid_client","error_description":"Invalid client credentials"}"#);
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    let wrong = "wr0ng-0auth-5ecret-91c4";
    std::fs::write(&secret_file, wrong).unwrap();
    let kafka = kafka_at(free_port(), "verdict-oauth-refused", "oauth-events", oauth_security(&url, &secret_file));
    let error = logged_error(&kafka, "OAuth token endpoint");
    assert!(error.contains("HTTP 401") && error.contains("invalid_client"), "says what failed: {error}");
    assert!(!seen.lock().unwrap().is_empty());
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!text.contains(wrong), "the logs show the client secret:\n{text}");
}
