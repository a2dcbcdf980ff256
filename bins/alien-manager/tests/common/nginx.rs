//! nginx from Debian (`spec/testing.md`) as the load balancer in front of several manager
//! replicas: round robin over 127.0.0.1 upstreams, long-poll friendly timeouts, request bodies
//! streamed (registry uploads), no body size limit. Its access log names the upstream that
//! served each request, so a test can tell where requests landed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx, stopped on drop.
pub struct Nginx {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Nginx {
    /// SIGTERM (fast shutdown: the master stops its workers, which a SIGKILL of the master would
    /// leave running), then SIGKILL if it is still there after 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx is not installed: run `cargo xtask setup` (Debian's nginx-light)")
}

impl Nginx {
    /// nginx on a free port, balancing over `upstreams` (`127.0.0.1:port` each).
    pub fn start(upstreams: &[u16]) -> Nginx {
        let binary = nginx_binary();
        let dir = tempfile::Builder::new().prefix("alien-nginx-").tempdir().unwrap();
        let port = super::free_port();
        let d = dir.path().display();
        let servers: String = upstreams
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=3s;\n"))
            .collect();
        let root = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        let user = if root { "user root;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             log_format upstream '$request_method $uri $status $upstream_addr';\n\
             access_log {d}/access.log upstream;\n\
             client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             upstream managers {{\n{servers}}}\n\
             server {{\n\
               listen 127.0.0.1:{port};\n\
               client_max_body_size 0;\n\
               proxy_request_buffering off;\n\
               proxy_buffering off;\n\
               proxy_read_timeout 120s;\n\
               proxy_send_timeout 120s;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Host $http_host;\n\
               proxy_set_header Connection \"\";\n\
               proxy_set_header X-Forwarded-For $remote_addr;\n\
               location / {{ proxy_pass http://managers; }}\n\
             }}\n}}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut nginx = Nginx { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.errors());
            }
            assert!(Instant::now() < deadline, "nginx did not listen: {}", nginx.errors());
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access log: method, path, status and upstream of each request so far.
    pub fn requests(&self) -> Vec<(String, String, u16, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let method = parts.next()?.to_owned();
                let path = parts.next()?.to_owned();
                let status = parts.next()?.parse().ok()?;
                let upstream = parts.collect::<Vec<_>>().join(" ");
                Some((method, path, status, upstream))
            })
            .collect()
    }

    fn errors(&self) -> String {
        let log =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", log("stderr.log"), log("error.log"))
    }
}
