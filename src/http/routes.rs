//! What each path answers. Usages are handled by the connection (they go
//! through the WAL); everything else is answered here from [`App`] state.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

use super::admission::Admission;
use super::request::{ContentType, Head, Method};
use super::response::{self, Conn};
use super::{ApiError, MediaTypeEcho};
use crate::app::{App, NotReady};
use crate::metrics::{self, Route};

/// `Allow` for a path that takes only POST (`/api/usages`).
pub const ALLOW_POST: &str = "POST";
/// `Allow` for the read-only paths.
pub const ALLOW_GET: &str = "GET, HEAD";

/// The live status page: self-contained, polls `/api/stats`.
const STATUS_PAGE: &str = include_str!("status.html");

/// The API as an OpenAPI 3.1 document, served as kept in the repository.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a routed request asks for.
pub enum Action {
    /// `POST /api/usages`: a usage into the WAL (the connection handles it).
    Ingest,
    /// `GET /`: the live status page.
    StatusPage,
    /// `GET /api/stats`: the status page's JSON.
    Stats,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /healthz`: the process is up.
    Healthz,
    /// `GET /readyz`: the node takes usages (200) or not (503).
    Readyz,
    /// `GET /openapi.json`: the API as an OpenAPI document.
    OpenApi,
}

/// The routes a listener serves: a value chosen per listener at start
/// (see `server::Server::start`), so which address answers what is decided
/// in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// `--listen` when `--admin-listen` is set: usages and the probes; the
    /// operational endpoints are 404 here.
    Public,
    /// `--admin-listen`: the operational endpoints (`/metrics`,
    /// `/api/stats`, the status page, `/openapi.json`) and the probes;
    /// usages are 404 here.
    Admin,
    /// `--listen` alone: every route, as without an admin address.
    Both,
}

impl Exposure {
    /// Whether a listener of this exposure answers `action`. The probes
    /// are on every listener, so a balancer can check either.
    pub fn serves(self, action: Action) -> bool {
        match action {
            Action::Healthz | Action::Readyz => true,
            Action::Ingest => self != Exposure::Admin,
            Action::StatusPage | Action::Stats | Action::Metrics | Action::OpenApi => {
                self != Exposure::Public
            }
        }
    }
}

/// Maps a request to its route (for metrics) and action, as a listener of
/// `exposure` serves them: a path it does not serve is 404, counted with
/// the unknown paths.
pub fn route(head: &Head<'_>, exposure: Exposure) -> (Route, Result<Action, ApiError>) {
    let (route, action) = match head.path {
        "/api/usages" => (Route::Usages, Action::Ingest),
        "/" => (Route::StatusPage, Action::StatusPage),
        "/api/stats" => (Route::Stats, Action::Stats),
        "/metrics" => (Route::Metrics, Action::Metrics),
        "/healthz" => (Route::Healthz, Action::Healthz),
        "/readyz" => (Route::Readyz, Action::Readyz),
        "/openapi.json" => (Route::OpenApi, Action::OpenApi),
        _ => return (Route::Other, Err(ApiError::NotFound)),
    };
    if !exposure.serves(action) {
        return (Route::Other, Err(ApiError::NotFound));
    }
    let allowed = match action {
        Action::Ingest => head.method == Method::Post,
        _ => matches!(head.method, Method::Get | Method::Head),
    };
    if !allowed {
        let allow = if action == Action::Ingest {
            ALLOW_POST
        } else {
            ALLOW_GET
        };
        return (route, Err(ApiError::MethodNotAllowed { allow }));
    }
    (route, Ok(action))
}

/// Checks that need only the head: a usage must be JSON, and the WAL must
/// have room. Runs before `100 Continue` and again with the body.
pub fn precheck(head: &Head<'_>, action: Action, app: &App) -> Result<(), ApiError> {
    if action != Action::Ingest {
        return Ok(());
    }
    if head.content_type == ContentType::Other {
        return Err(ApiError::UnsupportedMediaType(MediaTypeEcho::new(
            head.media_type,
        )));
    }
    if app.over_quota() {
        return Err(NotReady::OverQuota.into());
    }
    Ok(())
}

/// Answers a non-ingest action; returns the status written.
pub fn respond(
    action: Action,
    app: &App,
    admission: &Admission,
    out: &mut Vec<u8>,
    conn: Conn,
    head_only: bool,
) -> u16 {
    let body: Page = match action {
        Action::Healthz => (response::JSON, Cow::Borrowed(br#"{"status": "ok"}"#), &[]),
        Action::Readyz => match app.readiness() {
            Ok(()) => (
                response::JSON,
                Cow::Borrowed(br#"{"status": "ready"}"#),
                &[],
            ),
            Err(why) => {
                let e = ApiError::NotReady(why);
                response::write_error(
                    out,
                    503,
                    &why.to_string(),
                    conn,
                    e.extra_headers(),
                    head_only,
                );
                return 503;
            }
        },
        Action::Metrics => (
            metrics::CONTENT_TYPE,
            Cow::Owned(metrics::render(app.gauges(admission.connections_open())).into_bytes()),
            &[],
        ),
        Action::Stats => (
            response::JSON,
            Cow::Owned(stats_json(app, admission).into_bytes()),
            NO_STORE,
        ),
        Action::OpenApi => (response::JSON, Cow::Borrowed(OPENAPI.as_bytes()), &[]),
        Action::StatusPage => (
            "text/html; charset=utf-8",
            Cow::Borrowed(STATUS_PAGE.as_bytes()),
            PAGE_HEADERS,
        ),
        Action::Ingest => {
            // The connection answers usages after their WAL commit; reaching
            // here is a routing bug, answered rather than panicked on.
            response::write_error(out, 500, "internal routing error", conn, &[], head_only);
            return 500;
        }
    };
    let (content_type, bytes, headers) = body;
    response::write(out, 200, content_type, &bytes, conn, headers, head_only);
    200
}

/// A 200's content type, body and extra headers.
type Page = (
    &'static str,
    Cow<'static, [u8]>,
    &'static [(&'static str, &'static str)],
);

/// Live numbers are never cached.
const NO_STORE: &[(&str, &str)] = &[("Cache-Control", "no-store")];
/// The status page: never cached, and it may load nothing from elsewhere.
const PAGE_HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", CSP),
];

/// The page may load nothing from elsewhere; its script and style are inline.
const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

/// The numbers behind the status page; rates are computed by the page from
/// two successive reads.
pub fn stats_json(app: &App, admission: &Admission) -> String {
    let totals = metrics::totals();
    let g = app.gauges(admission.connections_open());
    let global = &*metrics::GLOBAL;
    let mongo_errors: u64 = global.mongo_errors.iter().map(|n| n.load(Relaxed)).sum();
    let (client_errors, server_errors) =
        totals
            .requests
            .iter()
            .fold((0, 0), |(c, s), (_, status, n)| match status {
                400..=499 => (c + n, s),
                500..=599 => (c, s + n),
                _ => (c, s),
            });
    let readiness = match app.readiness() {
        Ok(()) => "ready".to_owned(),
        Err(why) => why.to_string(),
    };
    format!(
        concat!(
            "{{\"version\": \"{}\", \"nodeId\": {}, \"uptimeSeconds\": {:.1}, ",
            "\"acknowledged\": {}, \"flushed\": {}, \"walBacklogRecords\": {}, \"walBacklogBytes\": {}, ",
            "\"walSegments\": {}, \"walWritable\": {}, \"mongoUp\": {}, \"mongoErrors\": {}, ",
            "\"clientErrors\": {}, \"serverErrors\": {}, \"ready\": {}, \"readiness\": \"{}\", ",
            "\"connectionsOpen\": {}, \"lastId\": {}, \"walMaxBytes\": {}}}"
        ),
        env!("CARGO_PKG_VERSION"),
        app.config.node_id,
        g.uptime_seconds,
        totals.acknowledged,
        global.records_flushed.load(Relaxed),
        g.wal_backlog_records,
        g.wal_backlog_bytes,
        g.wal_segments,
        g.wal_writable,
        g.mongo_up,
        mongo_errors,
        client_errors,
        server_errors,
        g.ready,
        readiness,
        g.connections_open,
        app.wal.last_id().raw(),
        app.config.wal_max_bytes,
    )
}
