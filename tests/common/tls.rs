//! A redis-server that speaks TLS only, requires client certificates and authenticates ACL
//! users, with a test CA and certificates generated for it by the `openssl` CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use verdict::config::RedisConfig;

/// The admin (`default`) user's password on a [`TlsRedis`].
pub const ADMIN_PASSWORD: &str = "admin-3f9a1c";

/// A CA, a server certificate for `localhost` / 127.0.0.1 and a client certificate, all
/// signed by the CA (P-256 keys: quick to make), in a temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().expect("the openssl CLI");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=verdict test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        for (name, ext) in [
            ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(d.join(&extfile), format!("basicConstraints=CA:FALSE\n{ext}")).unwrap();
            let subject = format!("/CN=verdict test {name}");
            openssl(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subject]].concat());
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        Self { dir }
    }

    /// A file of the PKI (`ca.pem`, `server.key`, `client.pem`...).
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `[redis]` settings trusting this CA and presenting the client certificate.
    pub fn client_settings(&self) -> RedisConfig {
        RedisConfig {
            tls_ca_file: self.path("ca.pem"),
            tls_cert_file: self.path("client.pem"),
            tls_key_file: self.path("client.key"),
            ..Default::default()
        }
    }
}

/// redis-server on a free port with TLS only (`--port 0`), client certificates required, and
/// ACL users from an ACL file: `default` (everything, password [`ADMIN_PASSWORD`]); add others
/// with `ACL SETUSER` as the admin. Killed on drop.
pub struct TlsRedis {
    child: std::process::Child,
    pub port: u16,
    pub pki: TestPki,
    /// Where the ACL file and the server's log are.
    pub dir: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start() -> Self {
        let pki = TestPki::generate();
        let dir = tempfile::tempdir().unwrap();
        let acl = dir.path().join("users.acl");
        std::fs::write(&acl, format!("user default on >{ADMIN_PASSWORD} ~* &* +@all\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &pki.path("server.pem"), "--tls-key-file", &pki.path("server.key")])
            .args(["--tls-ca-cert-file", &pki.path("ca.pem"), "--tls-auth-clients", "yes"])
            .args(["--aclfile", &path_str(&acl), "--save", "", "--appendonly", "no", "--logfile", &path_str(&log)])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let s = Self { child, port, pki, dir };
        let admin = s.admin_settings();
        super::wait_for("redis-server to accept TLS connections", Duration::from_secs(10), || {
            verdict::core::redis::client("test", &s.url(), &admin).unwrap().get_connection().is_ok()
        });
        s
    }

    /// `rediss://localhost:{port}/` (the server certificate names localhost).
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}/", self.port)
    }

    /// The `default` user's settings: everything allowed.
    pub fn admin_settings(&self) -> RedisConfig {
        RedisConfig { username: "default".into(), password: ADMIN_PASSWORD.into(), ..self.pki.client_settings() }
    }

    /// A connection as the `default` user, to seed and read back state.
    pub fn admin(&self) -> redis::Connection {
        verdict::core::redis::client("test", &self.url(), &self.admin_settings()).unwrap().get_connection().unwrap()
    }

    /// Commands the server refused to a user for lack of permission (`ACL LOG`), one line each.
    pub fn acl_denials(&self) -> Vec<String> {
        let entries: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut self.admin()).unwrap();
        entries.iter().map(|e| format!("{e:?}")).collect()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path_str(p: &Path) -> String {
    PathBuf::from(p).display().to_string()
}
