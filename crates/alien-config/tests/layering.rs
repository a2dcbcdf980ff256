//! Precedence (default < file < env < flag), environment names, errors that name the key, the
//! `--init` template and the generated reference.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use alien_config::*;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn file(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("f.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self, cli: &CliOverrides, env: &[(&str, &str)]) -> Result<LoadedConfig, ConfigError> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        load_from(cli, env, self.dir.path())
    }
}

fn err_text(result: Result<LoadedConfig, ConfigError>) -> String {
    match result {
        Ok(c) => panic!("expected an error, got {:?}", c.config),
        Err(e) => e.to_string(),
    }
}

/// One row per layer combination: which layers set the key, and the value that must win.
#[test]
fn precedence_matrix_for_port_host_base_url_and_otlp_endpoint() {
    struct Key {
        toml: (&'static str, &'static str),
        short_env: &'static str,
        values: [&'static str; 3], // file, env, flag
        get: fn(&ManagerConfig) -> String,
        flag: fn(&mut CliOverrides, &str),
        default: &'static str,
        path: &'static str,
    }
    let keys = [
        Key {
            toml: ("server", "port"),
            short_env: "PORT",
            values: ["9000", "9001", "9002"],
            get: |c| c.server.port.to_string(),
            flag: |cli, v| cli.port = Some(v.parse().unwrap()),
            default: "8080",
            path: "server.port",
        },
        Key {
            toml: ("server", "host"),
            short_env: "HOST",
            values: ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
            get: |c| c.server.host.clone(),
            flag: |cli, v| cli.host = Some(v.to_owned()),
            default: "0.0.0.0",
            path: "server.host",
        },
        Key {
            toml: ("server", "base-url"),
            short_env: "BASE_URL",
            values: ["http://file.example", "http://env.example", "http://flag.example"],
            get: |c| c.server.effective_base_url(),
            flag: |cli, v| cli.base_url = Some(v.to_owned()),
            default: "http://localhost:8080",
            path: "server.base-url",
        },
        Key {
            toml: ("telemetry", "otlp-endpoint"),
            short_env: "OTLP_ENDPOINT",
            values: ["http://file.otel", "http://env.otel", "http://flag.otel"],
            get: |c| c.telemetry.otlp_endpoint.clone().unwrap_or_else(|| "none".into()),
            flag: |_, _| {},
            default: "none",
            path: "telemetry.otlp-endpoint",
        },
    ];
    for key in &keys {
        let has_flag = key.path != "telemetry.otlp-endpoint"; // no CLI flag exists for it
        for mask in 0..8u8 {
            let (file, env, flag) = (mask & 1 != 0, mask & 2 != 0, mask & 4 != 0 && has_flag);
            let setup = Setup::new();
            let mut cli = CliOverrides::default();
            let text = if file {
                let v = key.values[0];
                let v = if key.path == "server.port" { v.to_owned() } else { format!("\"{v}\"") };
                format!("[{}]\n{} = {v}\n", key.toml.0, key.toml.1)
            } else {
                String::new()
            };
            cli.config = Some(setup.file(&text));
            let mut env_vars = Vec::new();
            if env {
                env_vars.push((key.short_env, key.values[1]));
            }
            if flag {
                (key.flag)(&mut cli, key.values[2]);
            }
            let loaded = setup.load(&cli, &env_vars).unwrap();
            let (expected, source) = if flag {
                (key.values[2], "flag")
            } else if env {
                (key.values[1], "env")
            } else if file {
                (key.values[0], "file")
            } else {
                (key.default, "default")
            };
            assert_eq!(
                (key.get)(&loaded.config),
                expected,
                "{} file={file} env={env} flag={flag}",
                key.path
            );
            if key.default != "none" || source != "default" {
                let effective = effective_values(&loaded);
                let row = effective.iter().find(|v| v.key == key.path).unwrap();
                let want = if source == "default" && key.path == "server.base-url" {
                    "derived"
                } else {
                    source
                };
                assert_eq!(row.source, want, "{} file={file} env={env} flag={flag}", key.path);
            }
        }
    }
}

#[test]
fn short_env_names_win_over_the_long_form() {
    let setup = Setup::new();
    let loaded = setup
        .load(&CliOverrides::default(), &[("PORT", "9001"), ("ALIEN_SERVER__PORT", "9005")])
        .unwrap();
    assert_eq!(loaded.config.server.port, 9001);
    let loaded = setup.load(&CliOverrides::default(), &[("ALIEN_SERVER__PORT", "9005")]).unwrap();
    assert_eq!(loaded.config.server.port, 9005);
}

#[test]
fn every_key_is_settable_from_the_environment() {
    let key = "ab".repeat(32);
    let setup = Setup::new();
    let loaded = setup
        .load(
            &CliOverrides::default(),
            &[
                ("ALIEN_DATABASE__ENCRYPTION_KEY", key.as_str()),
                ("ALIEN_SERVER__DEPLOYMENT_INTERVAL_SECS", "3"),
                ("ALIEN_SERVER__HEARTBEAT_LOOP", "false"),
                ("ALIEN_SERVER__LOG_FORMAT", "json"),
                ("ALIEN_COMMANDS__KV__SERVICE", "dynamodb"),
                ("ALIEN_COMMANDS__KV__TABLE_NAME", "t1"),
                ("ALIEN_COMMANDS__KV__REGION", "eu-west-1"),
                ("ALIEN_TELEMETRY__HEADERS__DD_API_KEY", "k"),
                ("ALIEN_DATABASE__URL", "postgres://alien:pw@db.internal:5432/alien"),
                ("ALIEN_IMPERSONATION__GCP__SERVICE", "gcpserviceaccount"),
                ("ALIEN_IMPERSONATION__GCP__EMAIL", "a@b.c"),
                ("ALIEN_IMPERSONATION__GCP__UNIQUE_ID", "123456789012345678"),
                ("UNRELATED", "x"),
                ("ALIEN_API_KEY", "not a config key: no section separator"),
            ],
        )
        .unwrap();
    let c = &loaded.config;
    assert_eq!(c.database.encryption_key.as_ref().map(Secret::expose), Some(key.as_str()));
    assert_eq!(c.server.deployment_interval_secs, 3);
    assert!(!c.server.heartbeat_loop);
    assert_eq!(c.server.log_format, LogFormat::Json);
    assert_eq!(
        c.commands.kv,
        Some(KvBinding::Dynamodb {
            table_name: "t1".into(),
            region: "eu-west-1".into(),
            endpoint_url: None
        })
    );
    assert_eq!(c.telemetry.headers.get("DD-API-KEY").map(Secret::expose), Some("k"));
    assert_eq!(
        c.database.url.as_ref().map(Secret::expose),
        Some("postgres://alien:pw@db.internal:5432/alien")
    );
    assert_eq!(
        c.impersonation.gcp,
        Some(GcpImpersonation::Gcpserviceaccount {
            email: "a@b.c".into(),
            unique_id: Some("123456789012345678".into())
        }),
        "numeric-looking text stays a string where a string is expected"
    );
}

#[test]
fn flags_set_loops_state_dir_and_log_format() {
    let setup = Setup::new();
    let cli = CliOverrides {
        state_dir: Some("/tmp/x".into()),
        disable_deployment_loop: true,
        disable_heartbeat_loop: true,
        log_format: Some(LogFormat::Json),
        ..Default::default()
    };
    let loaded = setup.load(&cli, &[("ALIEN_SERVER__DEPLOYMENT_LOOP", "true")]).unwrap();
    let c = &loaded.config;
    assert_eq!(c.database.state_dir, Path::new("/tmp/x"));
    assert!(!c.server.deployment_loop && !c.server.heartbeat_loop);
    assert_eq!(c.server.log_format, LogFormat::Json);
    assert_eq!(loaded.source_of("server.deployment-loop"), "flag");
}

#[test]
fn a_file_in_the_working_directory_is_read_without_config() {
    let setup = Setup::new();
    std::fs::write(setup.dir.path().join("alien-manager.toml"), "[server]\nport = 7000\n").unwrap();
    let loaded = setup.load(&CliOverrides::default(), &[]).unwrap();
    assert_eq!(loaded.config.server.port, 7000);
    assert_eq!(loaded.file.as_deref(), Some(setup.dir.path().join("alien-manager.toml").as_path()));
}

#[test]
fn a_missing_config_file_is_an_error() {
    let setup = Setup::new();
    let cli =
        CliOverrides { config: Some(setup.dir.path().join("nope.toml")), ..Default::default() };
    let err = err_text(setup.load(&cli, &[]));
    assert!(err.contains("nope.toml") && err.contains("does not exist"), "{err}");
}

/// Each bad example of spec/config.md fails with a message naming the key (and the file).
#[test]
fn bad_examples_name_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("[server]\nprot = 8080\n", &["f.toml", "server.prot", "unknown field"]),
        ("[server]\nport = \"abc\"\n", &["f.toml", "server.port", "abc", "u16"]),
        ("[database]\nencryption-key = \"zz\"\n", &["f.toml", "database.encryption-key", "64 hex"]),
        (
            "[artifact-registry.aws]\nservice = \"nexus\"\n",
            &["f.toml", "artifact-registry.aws.service", "unknown variant", "nexus", "ecr"],
        ),
        (
            "[commands]\nkv = { service = \"dynamodb\", region = \"us-east-1\" }\n",
            &["f.toml", "commands.kv.tableName", "missing field"],
        ),
        (
            "[artifact-registry.aws]\nservice = \"ecr\"\n",
            &["f.toml", "artifact-registry.aws.repositoryPrefix", "missing field"],
        ),
        (
            "[server]\ndeployment-interval-secs = 0\n",
            &["f.toml", "server.deployment-interval-secs", "at least 1"],
        ),
        (
            "[server]\nheartbeat-interval-secs = 0\n",
            &["server.heartbeat-interval-secs", "at least 1"],
        ),
        ("[servr]\nport = 1\n", &["f.toml", "servr", "unknown field"]),
        (
            "[artifact-registry.aws]\nservice = \"ecr\"\nrepositoryPrefix = \"p\"\ntypo = 1\n",
            &["artifact-registry.aws.typo", "unknown field"],
        ),
        ("[server]\nbase-url = \"not a url\"\n", &["f.toml", "server.base-url", "URL"]),
        ("[telemetry]\notlp-endpoint = \"ftp://x\"\n", &["telemetry.otlp-endpoint", "http"]),
        (
            "[artifact-registry.gcp]\nservice = \"gar\"\nrepositoryName = \"alien\"\n",
            &["artifact-registry.gcp.repositoryName", "projects/P/locations/L/repositories/R"],
        ),
        (
            "[artifact-registry.aws]\nservice = \"gar\"\nrepositoryName = \"projects/p/locations/l/repositories/r\"\n",
            &["artifact-registry.aws.service", "ecr, local"],
        ),
        (
            "[commands]\nstorage = { service = \"s3\", bucketName = \"\" }\n",
            &["commands.storage.bucketName", "empty"],
        ),
        ("[server]\nport = 70000\n", &["server.port", "70000"]),
        (
            "[artifact-registry.aws]\nservice = \"local\"\ndataDir = \"/x\"\n",
            &["artifact-registry.aws.dataDir", "default"],
        ),
        (
            "[artifact-registry.default]\nservice = \"local\"\nregistryUrl = \"https://r.example/v2\"\n",
            &["artifact-registry.default.registryUrl", "without a path"],
        ),
        (
            "[artifact-registry.default]\nservice = \"local\"\nregistryUrl = \"ftp://r.example\"\n",
            &["artifact-registry.default.registryUrl"],
        ),
        ("[database]\nurl = \"mysql://db/alien\"\n", &["f.toml", "database.url", "PostgreSQL URL"]),
        (
            "[database]\nurl = \"postgres://db/alien\"\npath = \"other.db\"\n",
            &["database.path", "PostgreSQL", "remove one"],
        ),
        (
            // Its default value, set all the same: refused too, not ignored.
            "[database]\nurl = \"postgres://db/alien\"\npath = \"alien-manager.db\"\n",
            &["f.toml", "database.path", "PostgreSQL", "remove one"],
        ),
        (
            "[commands]\nkv = { service = \"postgres\" }\n",
            &["commands.kv.url", "required unless [database] url"],
        ),
    ];
    for (text, needles) in cases {
        let setup = Setup::new();
        let cli = CliOverrides { config: Some(setup.file(text)), ..Default::default() };
        let err = err_text(setup.load(&cli, &[]));
        for needle in *needles {
            assert!(err.contains(needle), "error for {text:?} lacks {needle:?}:\n{err}");
        }
    }
}

#[test]
fn env_and_flag_errors_name_the_variable() {
    let setup = Setup::new();
    let err = err_text(setup.load(&CliOverrides::default(), &[("PORT", "abc")]));
    assert!(err.contains("PORT") && err.contains("server.port"), "{err}");
    let err = err_text(setup.load(&CliOverrides::default(), &[("ALIEN_SERVER__PROT", "1")]));
    assert!(err.contains("prot"), "{err}");
    let err = err_text(
        setup.load(&CliOverrides { base_url: Some("nope".into()), ..Default::default() }, &[]),
    );
    assert!(err.contains("--base-url") && err.contains("server.base-url"), "{err}");
}

#[test]
fn all_violations_are_reported_at_once() {
    let setup = Setup::new();
    let text = "[server]\ndeployment-interval-secs = 0\nheartbeat-interval-secs = 0\n[database]\nencryption-key = \"x\"\n";
    let cli = CliOverrides { config: Some(setup.file(text)), ..Default::default() };
    let err = setup.load(&cli, &[]).unwrap_err();
    assert_eq!(err.issues().len(), 3, "{err}");
}

/// The key path of an unknown key is the key itself, once (not `server.prot.prot`).
#[test]
fn an_unknown_key_is_named_once() {
    let setup = Setup::new();
    let cli =
        CliOverrides { config: Some(setup.file("[server]\nprot = 8080\n")), ..Default::default() };
    let keys: Vec<String> =
        setup.load(&cli, &[]).unwrap_err().issues().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, ["server.prot"]);
    let keys: Vec<String> = setup
        .load(&CliOverrides::default(), &[("ALIEN_SERVER__PROT", "1")])
        .unwrap_err()
        .issues()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["server.prot"]);
}

/// Deserialization stops at the first error; the loader keeps reading, so one run of
/// `config check` lists every problem of the file: unknown keys, wrong types, bad bindings and
/// the value rules together.
#[test]
fn every_problem_of_a_file_is_reported_together() {
    let setup = Setup::new();
    let text = "[server]\nprot = 8080\nport = \"abc\"\n[database]\nencryption-key = \"zz\"\n\
                [commands]\nkv = { service = \"dynamodb\", region = \"us-east-1\" }\n\
                [artifact-registry.aws]\nservice = \"nexus\"\n";
    let cli = CliOverrides { config: Some(setup.file(text)), ..Default::default() };
    let err = setup.load(&cli, &[]).unwrap_err();
    let mut keys: Vec<String> = err.issues().into_iter().map(|i| i.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "artifact-registry.aws.service",
            "commands.kv.tableName",
            "database.encryption-key",
            "server.port",
            "server.prot",
        ],
        "{err}"
    );
    for issue in err.issues() {
        assert!(issue.origin.ends_with("f.toml"), "{issue}");
    }
}

#[test]
fn init_template_parses_back_to_exactly_the_defaults() {
    assert_eq!(parse_toml(TEMPLATE).unwrap(), ManagerConfig::default());
    let setup = Setup::new();
    let cli = CliOverrides { config: Some(setup.file(TEMPLATE)), ..Default::default() };
    assert_eq!(setup.load(&cli, &[]).unwrap().config, ManagerConfig::default());
    // The template with the database URL in the environment (how a secret is passed): the
    // store is on PostgreSQL and nothing of the template is refused.
    let url = "postgres://alien@db.internal:5432/alien";
    let loaded = setup.load(&cli, &[("ALIEN_DATABASE__URL", url)]).unwrap();
    assert!(loaded.config.database.url.is_some());
}

#[test]
fn effective_values_redact_secrets_and_name_sources() {
    let setup = Setup::new();
    let key = "0f".repeat(32);
    let text = format!(
        "[database]\nencryption-key = \"{key}\"\n[telemetry.headers]\nAuthorization = \"Basic c2VjcmV0\"\n"
    );
    let cli =
        CliOverrides { config: Some(setup.file(&text)), port: Some(9100), ..Default::default() };
    let loaded = setup.load(&cli, &[("HOST", "127.0.0.1")]).unwrap();
    let listing = render_effective(&loaded);
    assert!(!listing.contains(&key), "{listing}");
    assert!(!listing.contains("c2VjcmV0"), "{listing}");
    let row = |k: &str| effective_values(&loaded).into_iter().find(|v| v.key == k).unwrap();
    assert_eq!(row("database.encryption-key").value, "\"<redacted>\"");
    assert_eq!(row("database.encryption-key").source, "file");
    assert_eq!(row("telemetry.headers.Authorization").value, "\"<redacted>\"");
    assert_eq!(
        (row("server.port").value.as_str(), row("server.port").source.as_str()),
        ("9100", "flag")
    );
    assert_eq!(row("server.host").source, "env");
    assert_eq!(row("server.releases-url").source, "default");
    assert_eq!(row("server.base-url").value, "\"http://localhost:9100\"");
    assert!(format!("{:?}", loaded.config).contains("<redacted>"));
    assert!(!format!("{:?}", loaded.config).contains(&key));
}

#[test]
fn configuration_reference_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = reference_markdown();
    assert!(
        committed == generated,
        "docs/configuration.md is out of date with the config types; run `cargo xtask docs`"
    );
}

#[test]
fn configuration_reference_lists_every_key_with_env_names() {
    let md = reference_markdown();
    for section in alien_config::schema::sections() {
        for key in &section.keys {
            let name = key.path.split_once('.').unwrap().1;
            assert!(md.contains(&format!("| `{name}` |")), "{}", key.path);
            for env in alien_config::schema::env_names(&key.path) {
                assert!(md.contains(&env), "{env}");
            }
        }
        for binding in &section.bindings {
            for variant in &binding.variants {
                assert!(md.contains(&format!("`service = \"{}\"`", variant.service)));
                for field in &variant.fields {
                    assert!(md.contains(&format!("| `{}` |", field.name)), "{}", field.name);
                }
            }
        }
    }
}

/// The registry's object storage: settable from the file and the environment, refused beside
/// `dataDir` or outside `[artifact-registry.default]`, its fields checked like any binding's.
#[test]
fn registry_storage_is_a_nested_binding() {
    let setup = Setup::new();
    let loaded = setup
        .load(
            &CliOverrides::default(),
            &[
                ("ALIEN_ARTIFACT_REGISTRY__DEFAULT__SERVICE", "local"),
                ("ALIEN_ARTIFACT_REGISTRY__DEFAULT__STORAGE__SERVICE", "s3"),
                ("ALIEN_ARTIFACT_REGISTRY__DEFAULT__STORAGE__BUCKET_NAME", "images"),
                ("ALIEN_ARTIFACT_REGISTRY__DEFAULT__STORAGE__REGION", "eu-west-1"),
            ],
        )
        .unwrap();
    let Some(ArtifactRegistryBinding::Local { storage: Some(storage), .. }) =
        &loaded.config.artifact_registry.default
    else {
        panic!("{:?}", loaded.config.artifact_registry)
    };
    assert_eq!(
        storage,
        &RegistryStorage::S3 {
            bucket_name: "images".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: None
        }
    );
    assert!(
        loaded.config.bindings().contains(&("artifact-registry.default.storage", "s3")),
        "checked against the build like every binding"
    );
    let cases = [
        (
            "[artifact-registry.default]\nservice = \"local\"\ndataDir = \"/r\"\nstorage = { service = \"s3\", bucketName = \"b\" }\n",
            "artifact-registry.default.dataDir",
        ),
        (
            "[artifact-registry.aws]\nservice = \"local\"\nstorage = { service = \"s3\", bucketName = \"b\" }\n",
            "artifact-registry.aws.storage",
        ),
        (
            "[artifact-registry.default]\nservice = \"local\"\nstorage = { service = \"s3\", bucketName = \"b\", endpointUrl = \"not a url\" }\n",
            "artifact-registry.default.storage.endpointUrl",
        ),
        (
            "[artifact-registry.default]\nservice = \"local\"\nstorage = { service = \"s3\", bucketName = \"\" }\n",
            "artifact-registry.default.storage.bucketName",
        ),
        (
            "[artifact-registry.default]\nservice = \"local\"\nstorage = { service = \"nfs\", containerName = \"b\" }\n",
            "found `nfs`, expected `one of `s3`, `gcs`, `blob``",
        ),
        (
            "[artifact-registry.default]\nservice = \"local\"\nstorage = { service = \"blob\", containerName = \"b\" }\n",
            "missing field `accountName`",
        ),
    ];
    for (toml, key) in cases {
        let cli = CliOverrides { config: Some(setup.file(toml)), ..Default::default() };
        let err = err_text(setup.load(&cli, &[]));
        assert!(err.contains(key), "{key} in: {err}");
    }
}

/// `[impersonation.aws]` names its role twice: a `roleName` that is not the ARN's is refused.
#[test]
fn the_management_role_name_must_be_the_arns() {
    let setup = Setup::new();
    let with = |name: &str, arn: &str| {
        format!(
            "[impersonation.aws]\nservice = \"awsiam\"\nroleName = \"{name}\"\nroleArn = \"{arn}\"\n"
        )
    };
    let ok = with("alien-management", "arn:aws:iam::123456789012:role/ops/alien-management");
    let cli = CliOverrides { config: Some(setup.file(&ok)), ..Default::default() };
    setup.load(&cli, &[]).unwrap();
    for (toml, key) in [
        (
            with("other", "arn:aws:iam::123456789012:role/alien-management"),
            "impersonation.aws.roleName",
        ),
        (with("alien-management", "alien-management"), "impersonation.aws.roleArn"),
    ] {
        let cli = CliOverrides { config: Some(setup.file(&toml)), ..Default::default() };
        let err = err_text(setup.load(&cli, &[]));
        assert!(err.contains(key), "{key} in: {err}");
    }
}
