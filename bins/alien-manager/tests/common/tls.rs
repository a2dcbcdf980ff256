//! Test certificates made by the openssl CLI (part of the machine image).

/// Runs openssl with `args`.
pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA in `dir` (`ca.crt`, `ca.key`), made by the openssl CLI.
pub fn test_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-days", "1", "-subj", "/CN=alien test CA"]);
    args.extend(["-keyout", key.to_str().unwrap(), "-out", crt.to_str().unwrap()]);
    openssl(&args);
    crt
}

/// A certificate for 127.0.0.1 with common name `cn`, signed by [`test_ca`] of `dir`, into
/// `cert` and `key`.
pub fn leaf(dir: &std::path::Path, cert: &std::path::Path, key: &std::path::Path, cn: &str) {
    let csr = dir.join("leaf.csr");
    let ext = dir.join("leaf.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    args.extend(["-nodes", "-subj", &subject, "-keyout", key.to_str().unwrap()]);
    args.extend(["-out", csr.to_str().unwrap()]);
    openssl(&args);
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca_crt.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
}
