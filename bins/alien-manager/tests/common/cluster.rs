//! Several `alien-manager` replicas on one PostgreSQL behind nginx (docs/scale-out.md): the
//! same encryption key, `BASE_URL` the balancer's, registry blobs and command payloads in one
//! shared directory, each replica with a state directory of its own.

use std::path::{Path, PathBuf};

use super::database::TestDatabase;
use super::nginx::Nginx;
use super::{Server, TEST_KEY, free_port, printed_admin_token, serve_deploying_on};

/// The replicas, the balancer and what they share.
pub struct Cluster {
    pub db: TestDatabase,
    pub nginx: Nginx,
    pub admin: String,
    /// The directory the replicas share (registry blobs, command payloads).
    pub shared: PathBuf,
    replicas: Vec<Option<Server>>,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
    /// Whether each replica runs the deployment loop.
    loops: Vec<bool>,
    file: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` replicas (the deployment loop on when `deploying`) with `extra_env` besides the
    /// shared settings; the first one's first start prints the admin token.
    pub async fn start(n: usize, deploying: bool, extra_env: &[(String, String)]) -> Cluster {
        Self::start_with_loops(&vec![deploying; n], extra_env).await
    }

    /// One replica per entry of `loops`, replica `i` running the deployment loop when
    /// `loops[i]`; otherwise as [`Cluster::start`].
    pub async fn start_with_loops(loops: &[bool], extra_env: &[(String, String)]) -> Cluster {
        let n = loops.len();
        let db = TestDatabase::postgres().await;
        let dir = tempfile::Builder::new().prefix("alien-cluster-").tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let file = dir.path().join("alien-manager.toml");
        std::fs::write(
            &file,
            format!(
                "[artifact-registry.default]\nservice = \"local\"\ndataDir = \"{0}/registry\"\n\n\
                 [commands]\nstorage = {{ service = \"local\", storagePath = \"{0}/payloads\" }}\n",
                shared.display()
            ),
        )
        .unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nginx = Nginx::start(&ports);
        let mut env: Vec<(String, String)> = vec![
            ("ALIEN_DATABASE__ENCRYPTION_KEY".into(), TEST_KEY.into()),
            ("BASE_URL".into(), nginx.url()),
        ];
        env.extend(db.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
        env.extend(extra_env.iter().cloned());
        let mut cluster = Cluster {
            db,
            nginx,
            admin: String::new(),
            shared,
            replicas: (0..n).map(|_| None).collect(),
            ports,
            env,
            loops: loops.to_vec(),
            file,
            dir,
        };
        for i in 0..n {
            cluster.start_replica(i);
            if i == 0 {
                let server = cluster.replica(0);
                cluster.admin = printed_admin_token(server).expect("the first start prints it");
            }
        }
        cluster
    }

    /// Starts replica `i` (again) on its port and state directory.
    pub fn start_replica(&mut self, i: usize) {
        let env: Vec<(&str, &str)> =
            self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut cmd = serve_deploying_on(&self.state(i), self.ports[i], &env);
        if !self.loops[i] {
            cmd.arg("--disable-deployment-loop");
        }
        cmd.arg("-c").arg(&self.file);
        self.replicas[i] = Some(Server::start(cmd));
    }

    /// Replica `i`, which must be running.
    pub fn replica(&self, i: usize) -> &Server {
        self.replicas[i].as_ref().expect("the replica runs")
    }

    /// SIGKILL to replica `i`.
    pub fn kill9(&mut self, i: usize) {
        self.replicas[i].take().expect("the replica runs").kill9();
    }

    /// The state directory of replica `i`.
    pub fn state(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("state-{i}"))
    }

    /// The replica whose deployment loop leases as `owner` (its `replica-id`).
    pub fn replica_of_owner(&self, owner: &str) -> Option<usize> {
        (0..self.ports.len()).find(|i| {
            std::fs::read_to_string(self.state(*i).join("replica-id"))
                .is_ok_and(|id| id.trim() == owner)
        })
    }

    /// The PostgreSQL URL the replicas share.
    pub fn database_url(&self) -> &str {
        self.db.url().expect("on PostgreSQL")
    }

    /// The root of the cluster's files.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}
