//! Unit tests of [`super::Config`]: defaults, bounds, the order of flag,
//! environment and file, and the rules between flags.

use super::values::parse_bytes;
use super::*;

fn load(args: &[&str]) -> Result<Config, ConfigError> {
    let argv: Vec<String> = std::iter::once("busyapi")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    Config::load(&argv)
}

#[test]
fn byte_sizes_take_binary_suffixes() {
    assert_eq!(parse_bytes("4096"), Ok(4096));
    assert_eq!(parse_bytes("16KiB"), Ok(16 * 1024));
    assert_eq!(parse_bytes("64m"), Ok(64 << 20));
    assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
    assert!(parse_bytes("4 parsecs").is_err());
    assert!(parse_bytes("x").is_err());
    assert!(parse_bytes("99999999999999999999").is_err());
}

#[test]
fn the_flag_definitions_pass_clap_s_own_checks() {
    Config::command().debug_assert();
}

#[test]
fn with_nothing_set_every_place_has_the_default_its_constant_gives() {
    let c = load(&[]).expect("the defaults are valid");
    let places = (
        c.config.as_deref(),
        c.listen,
        c.admin_listen,
        c.data_dir.as_path(),
        c.mongodb_uri.as_str(),
        c.database.as_str(),
        c.collection.as_str(),
        c.dead_letter_collection.as_str(),
    );
    assert_eq!(
        places,
        (
            None,
            LISTEN_DEFAULT,
            None,
            std::path::Path::new(DATA_DIR_DEFAULT),
            MONGODB_URI_DEFAULT,
            DATABASE_DEFAULT,
            COLLECTION_DEFAULT,
            DEAD_LETTER_COLLECTION_DEFAULT,
        )
    );
}

#[test]
fn with_nothing_set_every_size_and_mode_has_the_default_its_constant_gives() {
    let c = load(&[]).expect("the defaults are valid");
    let sizes = (
        c.node_id,
        c.fresh_dir_ids,
        c.workers,
        c.wal_max_bytes,
        c.wal_segment_bytes,
        c.max_body_bytes,
        (c.batch_max_records, c.batch_max_bytes),
        c.flush_max_records,
        c.flush_concurrency,
        c.write_concern,
        (c.max_connections, c.metrics),
        (c.key_rate_per_s, c.key_burst),
    );
    assert_eq!(
        sizes,
        (
            NODE_ID_DEFAULT,
            FreshDirIds::AskMongodb,
            cores(),
            WAL_MAX_BYTES_DEFAULT,
            SEGMENT_BYTES_DEFAULT,
            BODY_BYTES_MAX_DEFAULT,
            (BATCH_RECORDS_MAX_DEFAULT, BATCH_BYTES_MAX_DEFAULT),
            FLUSH_MAX_RECORDS_DEFAULT,
            FLUSH_CONCURRENCY_DEFAULT,
            Concern::Journaled,
            (CONNECTIONS_MAX_DEFAULT, METRICS_DEFAULT),
            (KEY_RATE_PER_S_DEFAULT, KEY_BURST_DEFAULT),
        )
    );
}

#[test]
fn with_nothing_set_every_duration_has_the_default_its_constant_gives() {
    let c = load(&[]).expect("the defaults are valid");
    let times = [
        c.commit_delay_max_us,
        c.flush_interval_ms,
        c.shutdown_grace_secs,
        c.shutdown_drain_ms,
        c.header_read_timeout_ms,
        c.body_read_timeout_ms,
        c.idle_timeout_ms,
    ];
    assert_eq!(
        times,
        [
            COMMIT_DELAY_MAX_US_DEFAULT,
            FLUSH_INTERVAL_MS_DEFAULT,
            SHUTDOWN_GRACE_SECS_DEFAULT,
            SHUTDOWN_DRAIN_MS_DEFAULT,
            HEADER_READ_TIMEOUT_MS_DEFAULT,
            BODY_READ_TIMEOUT_MS_DEFAULT,
            IDLE_TIMEOUT_MS_DEFAULT,
        ]
    );
}

#[test]
fn a_byte_size_is_shown_in_its_largest_exact_unit_and_reads_back_as_itself() {
    assert_eq!(bytes_text(WAL_MAX_BYTES_DEFAULT), "4GiB");
    assert_eq!(bytes_text(SEGMENT_BYTES_DEFAULT), "64MiB");
    assert_eq!(bytes_text(BODY_BYTES_MAX_DEFAULT as u64), "16KiB");
    assert_eq!(bytes_text(1536), "1536");
    for n in [0, 1, 1000, 1536, 1 << 10, 3 << 20, 5 << 40] {
        assert_eq!(parse_bytes(&bytes_text(n)), Ok(n), "{n}");
    }
}

#[test]
fn bad_values_name_their_flag() {
    for (args, flag) in [
        (&["--node-id", "1024"][..], "node-id"),
        (&["--workers", "0"][..], "workers"),
        (&["--wal-max-bytes", "10"][..], "wal-max-bytes"),
        (&["--max-body-bytes", "2GiB"][..], "max-body-bytes"),
        (&["--flush-max-records", "0"][..], "flush-max-records"),
        (&["--batch-max-records", "0"][..], "batch-max-records"),
        (&["--batch-max-records", "2049"][..], "batch-max-records"),
        (&["--batch-max-bytes", "9MiB"][..], "batch-max-bytes"),
        (&["--idle-timeout-ms", "1"][..], "idle-timeout-ms"),
        (&["--mongodb-uri", "http://x"][..], "mongodb-uri"),
        (&["--collection", "a$b"][..], "collection"),
        (
            &["--dead-letter-collection", "a b"][..],
            "dead-letter-collection",
        ),
        (
            &["--collection", "c", "--dead-letter-collection", "c"][..],
            "dead-letter-collection",
        ),
        (&["--wal-segment-bytes", "1KiB"][..], "wal-segment-bytes"),
        (&["--mongodb-uri", "mongodb://"][..], "mongodb-uri"),
        (
            &["--listen", "127.0.0.1:9", "--admin-listen", "127.0.0.1:9"][..],
            "admin-listen",
        ),
        (&["--tls-cert", "c.pem"][..], "tls-cert"),
        (&["--tls-key", "k.pem"][..], "tls-key"),
        (&["--auth", "required"][..], "auth"),
        (&["--key-rate-per-s", "0"][..], "key-rate-per-s"),
    ] {
        match load(args) {
            Err(ConfigError::Invalid { flag: f, .. }) => assert_eq!(f, flag),
            other => panic!("{args:?}: {other:?}"),
        }
    }
    assert!(matches!(
        load(&["--listen", "nowhere"]),
        Err(ConfigError::Clap(_))
    ));
}

#[test]
fn auth_is_required_with_a_keys_file_and_off_without_unless_said() {
    assert_eq!(load(&[]).expect("valid").auth_mode(), AuthMode::Off);
    let with = load(&["--api-keys-file", "/k.toml"]).expect("valid");
    assert_eq!(with.auth_mode(), AuthMode::Required);
    let off = load(&["--api-keys-file", "/k.toml", "--auth", "off"]).expect("valid");
    assert_eq!(off.auth_mode(), AuthMode::Off);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("busyapi.toml");
    std::fs::write(&path, "api_keys_file = \"/etc/k.toml\"\nkey-burst = 7\n").expect("write");
    let c = load(&["--config", path.to_str().expect("utf8")]).expect("valid");
    assert_eq!(
        c.api_keys_file.as_deref(),
        Some(std::path::Path::new("/etc/k.toml"))
    );
    assert_eq!((c.auth_mode(), c.key_burst), (AuthMode::Required, 7));
}

#[test]
fn a_config_file_fills_in_what_flags_do_not_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("busyapi.toml");
    std::fs::write(
        &path,
        "node_id = 7\nflush-interval-ms = 20\nwal_max_bytes = \"64MiB\"\n",
    )
    .expect("write");
    let p = path.to_str().expect("utf8");
    let c = load(&["--config", p, "--node-id", "9"]).expect("valid");
    assert_eq!(
        (c.node_id, c.flush_interval_ms, c.wal_max_bytes),
        (9, 20, 64 << 20)
    );
    std::fs::write(&path, "no_such_setting = 1\n").expect("write");
    assert!(matches!(
        load(&["--config", p]),
        Err(ConfigError::File { .. })
    ));
}
