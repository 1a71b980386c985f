//! Real nginx in front of the sites, as the shipped snippets are used: found where Debian
//! installs it, run in the foreground with a prefix of its own, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The nginx binary, if installed.
pub fn nginx_binary() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

/// The nginx binary for a test that needs it: missing in CI is a failure (`.ci/run`
/// installs it), missing elsewhere skips the test with a message.
pub fn nginx_or_skip() -> Option<String> {
    let found = nginx_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have nginx: .ci/run installs it"
        );
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
    }
    found
}

/// A running nginx, killed when dropped.
pub struct Nginx(pub Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Nginx {
    /// Checks and starts nginx with the `http { }` block's contents `http`, under `prefix`
    /// (its temp files, pid and error log go there).
    pub fn start(nginx: &str, prefix: &Path, http: &str) -> Nginx {
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        let p = prefix.display();
        let conf = format!(
            "master_process off;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/tmp; proxy_temp_path {p}/tmp; fastcgi_temp_path {p}/tmp; uwsgi_temp_path {p}/tmp; scgi_temp_path {p}/tmp;\n{http}\n}}\n"
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let test = Command::new(nginx)
            .args(["-t", "-p"])
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        Nginx(
            Command::new(nginx)
                .arg("-p")
                .arg(prefix)
                .arg("-c")
                .arg(&conf_path)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}
