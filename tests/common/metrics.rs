//! What `/metrics` says, read the way a Prometheus scraper reads it.

use super::server::Server;

/// One scrape of `/metrics`.
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    pub fn of(s: &Server) -> Scrape {
        let r = s.ops_get("/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        Scrape { text: r.text() }
    }

    /// The value of one series, e.g. `name_count` or `name_total{kind="x"}`.
    pub fn try_value(&self, series: &str) -> Option<f64> {
        self.text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
    }

    pub fn value(&self, series: &str) -> f64 {
        self.try_value(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", self.text))
    }

    /// The declared type of a family (`# TYPE family kind`).
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (name == family).then_some(kind)
        })
    }

    /// The buckets of a histogram, `(le, cumulative count)` in order.
    pub fn buckets(&self, family: &str) -> Vec<(String, f64)> {
        let prefix = format!("{family}_bucket{{le=\"");
        self.text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, value) = rest.split_once("\"} ")?;
                Some((le.to_owned(), value.parse().expect("a count")))
            })
            .collect()
    }
}

/// One series of `/metrics`, scraped now.
pub fn metric(s: &Server, series: &str) -> f64 {
    Scrape::of(s).value(series)
}
