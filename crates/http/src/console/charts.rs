//! Pictures as inline SVG: horizontal bars, hidden dangers by platform and level, and a world
//! map (the land of Natural Earth, embedded) with a point per located address.

use maud::{Markup, html};

use super::{Lang, num, tr};
use br_cti_domain::vocab::IssueLevel;

/// Horizontal bars, one per `(label, value)`, longest first as given.
pub(crate) fn bars(lang: Lang, id: &str, items: &[(String, u64)]) -> Markup {
    if items.is_empty() {
        return html! { p.hint { (tr(lang, "Nothing to show.")) } };
    }
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let row = 22.0;
    let height = row * items.len() as f64 + 4.0;
    html! {
        svg id=(id) class="chart" viewBox=(format!("0 0 600 {height}")) role="img" aria-label=(tr(lang, "Chart")) {
            @for (i, (label, n)) in items.iter().enumerate() {
                @let y = 2.0 + row * i as f64;
                @let w = (*n as f64 / max as f64 * 360.0).max(1.0);
                g.bar data-label=(label) data-value=(n) {
                    text x="150" y=(y + 15.0) text-anchor="end" class="label" { (label) }
                    rect x="160" y=(y + 3.0) width=(format!("{w:.1}")) height="16" rx="2" {}
                    text x=(format!("{:.1}", 166.0 + w)) y=(y + 15.0) class="value" { (num(*n)) }
                }
            }
        }
    }
}

/// A platform's bar: its name, total, segments `(level, x, width, count)` and where it ends.
type PlatformRow<'a> = (&'a str, u64, Vec<(usize, f64, f64, u64)>, f64);

/// Hidden dangers per platform, one segment per level.
pub(crate) fn stacked_levels(lang: Lang, counts: &[(String, IssueLevel, u64)]) -> Markup {
    if counts.is_empty() {
        return html! { p.hint { (tr(lang, "Nothing to show.")) } };
    }
    let mut platforms: Vec<(&str, [u64; 5])> = Vec::new();
    for (user, level, n) in counts {
        if platforms.last().map(|p| p.0) != Some(user.as_str()) {
            platforms.push((user, [0; 5]));
        }
        if let Some(last) = platforms.last_mut() {
            last.1[usize::from(level.number()).min(4)] += n;
        }
    }
    let max = platforms
        .iter()
        .map(|p| p.1.iter().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let row = 24.0;
    let height = row * platforms.len() as f64 + 30.0;
    // Each platform's segments: (level, x, width, count).
    let rows: Vec<PlatformRow> = platforms
        .iter()
        .map(|(platform, levels)| {
            let mut x = 120.0;
            let mut segments = Vec::new();
            for (l, n) in levels.iter().enumerate().filter(|(_, n)| **n > 0) {
                let w = *n as f64 / max as f64 * 400.0;
                segments.push((l, x, w, *n));
                x += w;
            }
            (*platform, levels.iter().sum(), segments, x)
        })
        .collect();
    let ly = row * platforms.len() as f64 + 10.0;
    html! {
        svg #level-chart.chart viewBox=(format!("0 0 600 {height}")) role="img" aria-label=(tr(lang, "By level and platform")) {
            @for (i, (platform, total, segments, end)) in rows.iter().enumerate() {
                @let y = row * i as f64;
                g.platform data-platform=(platform) data-total=(total) {
                    text x="110" y=(y + 16.0) text-anchor="end" class="label" { (platform) }
                    @for (l, x, w, n) in segments {
                        rect class=(format!("level-{l}")) x=(format!("{x:.1}")) y=(y + 4.0) width=(format!("{w:.1}")) height="16" {
                            title { (super::i18n::label(lang, IssueLevel::ALL[*l].label())) ": " (n) }
                        }
                    }
                    text x=(format!("{:.1}", end + 6.0)) y=(y + 16.0) class="value" { (num(*total)) }
                }
            }
            @for (l, level) in IssueLevel::ALL.iter().enumerate() {
                rect class=(format!("level-{l}")) x=(120 + l * 95) y=(ly) width="12" height="12" {}
                text x=(136 + l * 95) y=(ly + 11.0) class="legend" { (super::i18n::label(lang, level.label())) }
            }
        }
    }
}

/// The world (equirectangular, 360 × 180) with a point per located address, its area
/// growing with the address's occurrences.
pub(crate) fn world_map(lang: Lang, points: &[(f64, f64, u64)]) -> Markup {
    let max = points.iter().map(|p| p.2).max().unwrap_or(1).max(1) as f64;
    html! {
        svg #world-map.map viewBox="0 0 360 180" role="img" aria-label=(tr(lang, "Where the addresses are")) {
            image href="/console/assets/world.svg" x="0" y="0" width="360" height="180" {}
            @for (lat, lon, n) in points {
                @if (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon) {
                    circle.point cx=(format!("{:.2}", lon + 180.0)) cy=(format!("{:.2}", 90.0 - lat))
                        r=(format!("{:.2}", 1.0 + 3.0 * (*n as f64 / max).sqrt())) {
                        title { (num(*n)) }
                    }
                }
            }
        }
        @if points.is_empty() {
            p.hint { (tr(lang, "No address could be located (private addresses, or no GeoIP database).")) }
        }
    }
}
