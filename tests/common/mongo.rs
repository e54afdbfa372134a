//! The dev MongoDB (SecantusDB) as a child process, and the collection
//! setup every suite that delivers needs.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::sync::{Client, Collection};

use super::{free_port, wait_for};

/// Time allowed for the dev MongoDB to answer one query.
pub const MONGO_ANSWER: Duration = Duration::from_secs(20);

fn secantusd() -> PathBuf {
    if let Ok(p) = std::env::var("BUSYAPI_SECANTUSD") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py");
    assert!(
        p.exists(),
        "the dev MongoDB (secantusd-py) is not installed: run scripts/dev-mongo.sh install, or use scripts/test.sh"
    );
    p
}

/// A dev MongoDB server on its own port and storage directory.
pub struct Mongo {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Run under a watchdog that stops it when the test process is gone
    /// (for the shared instance, which lives in a static and is never
    /// dropped). Such an instance cannot be killed to fake an outage.
    watched: bool,
    /// Where it listens: loopback, or a test host's address.
    host: IpAddr,
    /// What runs it: nothing, or `ip netns exec NAME` for a test host.
    launcher: Vec<String>,
}

impl Mongo {
    pub fn start() -> Mongo {
        Mongo::start_with(false)
    }

    fn start_with(watched: bool) -> Mongo {
        Mongo::start_at(
            watched,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            free_port(),
            Vec::new(),
        )
    }

    /// A server on `host:port` inside a network namespace, run by
    /// `launcher` (`ip netns exec NAME`).
    pub fn start_in(host: IpAddr, port: u16, launcher: Vec<String>) -> Mongo {
        Mongo::start_at(false, host, port, launcher)
    }

    fn start_at(watched: bool, host: IpAddr, port: u16, launcher: Vec<String>) -> Mongo {
        let mut m = Mongo {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            watched,
            host,
            launcher,
        };
        m.restart();
        m
    }

    pub fn uri(&self) -> String {
        format!("mongodb://{}:{}", self.host, self.port)
    }

    /// (Re)starts the server on the same port and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("secantusd.log")).expect("log file");
        let mut cmd = if self.watched {
            // The watchdog ends the server once this test process is gone.
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(concat!(
                    r#""$@" & child=$!; trap 'kill $child 2>/dev/null' EXIT; "#,
                    r#"while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done"#
                ))
                .arg("watchdog")
                .arg(secantusd())
                .env("WATCH_PID", std::process::id().to_string());
            c
        } else if let Some((program, args)) = self.launcher.split_first() {
            let mut c = Command::new(program);
            c.args(args).arg(secantusd());
            c
        } else {
            Command::new(secantusd())
        };
        let child = cmd
            .args([
                "--host",
                &self.host.to_string(),
                "--port",
                &self.port.to_string(),
                "--log-level",
                "WARNING",
            ])
            .arg("--storage-path")
            .arg(self.dir.path().join("db"))
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        let addr = (self.host, self.port);
        wait_for(Duration::from_secs(30), "the dev MongoDB to listen", || {
            TcpStream::connect(addr).is_ok()
        });
    }

    /// Kills the server (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        assert!(
            !self.watched,
            "the shared dev MongoDB cannot be killed; use Mongo::start()"
        );
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client::with_uri_str(format!("{}/?serverSelectionTimeoutMS=5000", self.uri()))
            .expect("client")
    }

    /// Every `_id` in `db.usages`, sorted (see [`stored_ids`]), on a client
    /// of its own.
    pub fn ids(&self, db: &str) -> Vec<u64> {
        stored_ids(&usages(&self.client(), db))
    }

    pub fn count(&self, db: &str) -> u64 {
        self.client()
            .database(db)
            .collection::<Document>("usages")
            .count_documents(doc! {})
            .run()
            .expect("count")
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        if !self.watched {
            self.kill();
        }
    }
}

/// One dev MongoDB shared by the tests of a test binary that do not stop it;
/// each test uses its own database.
pub fn shared_mongo() -> &'static Mongo {
    static MONGO: OnceLock<Mongo> = OnceLock::new();
    MONGO.get_or_init(|| Mongo::start_with(true))
}

/// `db.usages` through `client`.
pub fn usages(client: &Client, db: &str) -> Collection<Document> {
    client.database(db).collection("usages")
}

/// Every `_id` in `coll`, sorted, as the ids the API hands out.
///
/// Tests that poll keep one client, and so one `coll`, for all their polls:
/// a client per poll leaves connections and monitors behind, and the dev
/// MongoDB slows down under them. The driver has no client-side timeout, so
/// the query runs on its own thread and a MongoDB that stopped answering
/// fails the test instead of hanging it.
pub fn stored_ids(coll: &Collection<Document>) -> Vec<u64> {
    let coll = coll.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ids: Vec<u64> = coll
            .find(doc! {})
            .projection(doc! {"_id": 1})
            .run()
            .expect("find")
            .map(|d| match d.expect("doc").get("_id") {
                Some(Bson::Int64(id)) => *id as u64,
                other => panic!("_id is not an Int64: {other:?}"),
            })
            .collect();
        let _ = tx.send(ids);
    });
    let mut ids = match rx.recv_timeout(MONGO_ANSWER) {
        Ok(ids) => ids,
        Err(RecvTimeoutError::Timeout) => {
            panic!("the dev MongoDB did not answer a find within {MONGO_ANSWER:?}")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("the find failed (its panic is above)"),
    };
    ids.sort_unstable();
    ids
}

/// Creates the (empty) collection before busyapi first writes to it.
///
/// The dev MongoDB (SecantusDB 0.7.0b3) can deadlock, for good, when an
/// `insert` and a `createIndexes` create the same collection at the same
/// moment; busyapi's sender and index threads do just that when they both
/// see MongoDB come back. A real mongod handles the race; here it would only
/// hang the test, so every test starts from an existing collection.
pub fn fresh_usages(mongo: &Mongo, db: &str) -> Collection<Document> {
    let database = mongo.client().database(db);
    database
        .create_collection("usages")
        .run()
        .expect("create the collection");
    database.collection("usages")
}

/// A unique index on `patientId`: MongoDB then refuses a second usage of
/// the same patient with a duplicate-key error on an index other than
/// `_id`'s.
pub fn unique_patient_ids(coll: &Collection<Document>) {
    let unique = IndexOptions::builder().unique(true).build();
    coll.create_index(
        IndexModel::builder()
            .keys(doc! {"patientId": 1})
            .options(unique)
            .build(),
    )
    .run()
    .expect("a unique index on patientId");
}

/// The medication [`usages_refusing_poison`]'s validator refuses.
pub const POISON: &str = "Poison";

/// Creates `db.usages` with a `$jsonSchema` validator that refuses every
/// usage of medication [`POISON`]: MongoDB refuses that document for good,
/// with code 121, as it would after a DBA added a validator.
pub fn usages_refusing_poison(mongo: &Mongo, db: &str) -> Collection<Document> {
    let database = mongo.client().database(db);
    database
        .create_collection("usages")
        .validator(
            doc! {"$jsonSchema": {"properties": {"medication": {"not": {"enum": [POISON]}}}}},
        )
        .run()
        .expect("create the collection with a validator");
    database.collection("usages")
}

/// `db`'s dead-letter collection, under busyapi's default name.
pub fn dead_letters(mongo: &Mongo, db: &str) -> Collection<Document> {
    mongo.client().database(db).collection("usages_deadletter")
}
