//! The result rows and their markdown tables.

use std::fmt::Write as _;

/// One measured phase of a scenario.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// The load: `max`, `max, batches of 100`, `1,000/s`...
    pub load: String,
    /// Events accepted per second (the gateway's 2xx answers; the receiver's for the baseline).
    pub accepted_per_s: Option<f64>,
    /// Deliveries per second received, first send to last delivery.
    pub deliveries_per_s: Option<f64>,
    /// Lag p50, p99, p99.9 in milliseconds.
    pub lag_ms: Option<[f64; 3]>,
    /// Requests the generator saw fail (non-2xx or transport).
    pub errors: u64,
    /// Accepted events that never reached a measured endpoint.
    pub lost: Option<u64>,
    /// Events delivered twice (2xx) to one endpoint.
    pub duplicated: Option<u64>,
    /// Gateway RSS before load, MiB.
    pub rss_idle_mib: Option<f64>,
    /// Gateway peak RSS during the phase, MiB.
    pub rss_load_mib: Option<f64>,
    /// Gateway CPU during the phase, percent of one core.
    pub cpu_pct: Option<f64>,
    /// Diagnostics.
    pub diag: Diag,
}

/// The second table: where the time went.
#[derive(Debug, Clone, Default)]
pub struct Diag {
    /// Spawn to the first 200 of `/readyz`, ms.
    pub startup_ms: Option<f64>,
    /// Gateway CPU while idle (before load), percent of one core.
    pub idle_cpu_pct: Option<f64>,
    /// Ingest response time p50 and p99, ms.
    pub ingest_ms: Option<[f64; 2]>,
    /// Open loop: sends later than the schedule allowed, and the largest delay (ms).
    pub late: Option<(u64, f64)>,
    /// Mean deliveries in flight (sampled from `/metrics`).
    pub in_flight: Option<f64>,
    /// Mean due deliveries, and the largest queue depth.
    pub due: Option<(f64, f64)>,
    /// SQLite syncs (`fdatasync`+`fsync`) per second, with `--perf-stat`.
    pub syncs_per_s: Option<f64>,
    /// Deliveries (or events, ingest only) per sync.
    pub per_sync: Option<f64>,
    /// Gateway CPU time per delivery (per accepted event when nothing is delivered), µs.
    pub cpu_us_per_item: Option<f64>,
    /// Mean delivery attempt (HTTP exchange) duration, ms, from `/metrics`.
    pub attempt_ms: Option<f64>,
    /// Mean plugin call duration, µs, from `/metrics`.
    pub plugin_us: Option<f64>,
    /// The harness's own CPU (generator and receiver), percent of one core.
    pub harness_cpu_pct: Option<f64>,
    /// Anything else worth saying.
    pub notes: Vec<String>,
}

/// `1234.5` → `1,235`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".to_owned())
}

/// A rate with its share of the ceiling: `1,234 (1.5%)`.
fn rate(v: Option<f64>, ceiling: Option<f64>) -> String {
    opt(v, |v| match ceiling {
        Some(c) if c > 0.0 => format!("{} ({:.1}%)", thousands(v), 100.0 * v / c),
        _ => thousands(v),
    })
}

/// Both tables.
pub fn markdown(rows: &[Row], ceiling: Option<f64>) -> String {
    let mut out = String::new();
    if let Some(c) = ceiling {
        let _ = writeln!(
            out,
            "Ceiling (baseline: the generator against the receiver alone): {} req/s. \
             Percentages are shares of it.\n",
            thousands(c)
        );
    }
    out.push_str(
        "| scenario | load | events accepted/s | deliveries/s | lag p50 / p99 / p99.9 (ms) | errors | lost | dup | RSS idle → load (MiB) | gateway CPU |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.load,
            rate(r.accepted_per_s, ceiling),
            rate(r.deliveries_per_s, ceiling),
            opt(r.lag_ms, |l| format!(
                "{} / {} / {}",
                ms(l[0]),
                ms(l[1]),
                ms(l[2])
            )),
            r.errors,
            opt(r.lost, |v| v.to_string()),
            opt(r.duplicated, |v| v.to_string()),
            match (r.rss_idle_mib, r.rss_load_mib) {
                (Some(i), Some(l)) => format!("{i:.1} → {l:.1}"),
                (None, Some(l)) => format!("– → {l:.1}"),
                _ => "–".to_owned(),
            },
            opt(r.cpu_pct, |c| format!("{c:.0}%")),
        );
    }
    out.push_str(
        "\n| scenario | load | start-up ms / idle CPU | ingest p50 / p99 (ms) | late sends (max delay ms) | in flight | due / max depth | syncs/s (items per sync) | CPU µs per item | attempt ms / plugin µs | harness CPU | notes |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let d = &r.diag;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.load,
            match (d.startup_ms, d.idle_cpu_pct) {
                (Some(s), Some(c)) => format!("{s:.0} / {c:.1}%"),
                (Some(s), None) => format!("{s:.0}"),
                _ => "–".to_owned(),
            },
            opt(d.ingest_ms, |l| format!("{} / {}", ms(l[0]), ms(l[1]))),
            opt(d.late, |(n, m)| format!("{n} ({})", ms(m))),
            opt(d.in_flight, |v| format!("{v:.1}")),
            opt(d.due, |(m, x)| format!(
                "{} / {}",
                thousands(m),
                thousands(x)
            )),
            opt(d.syncs_per_s, |s| match d.per_sync {
                Some(p) => format!("{} ({p:.1})", thousands(s)),
                None => thousands(s),
            }),
            opt(d.cpu_us_per_item, |v| format!("{v:.0}")),
            match (d.attempt_ms, d.plugin_us) {
                (Some(a), Some(p)) => format!("{} / {p:.0}", ms(a)),
                (Some(a), None) => format!("{} / –", ms(a)),
                _ => "–".to_owned(),
            },
            opt(d.harness_cpu_pct, |c| format!("{c:.0}%")),
            d.notes.join("; "),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.5), "1,235");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1500.0), "-1,500");
    }

    #[test]
    fn rates_show_their_share_of_the_ceiling() {
        assert_eq!(rate(Some(500.0), Some(1000.0)), "500 (50.0%)");
        assert_eq!(rate(None, Some(1000.0)), "–");
        assert_eq!(rate(Some(500.0), None), "500");
    }
}
