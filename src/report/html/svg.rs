//! SVG primitives for the timeline: a string builder that writes shapes with a hover title,
//! the time scale (µs → x), and the escaping every piece of text from the timeline goes
//! through.
//!
//! Invariant: every attribute value and text node written here is escaped; callers hand in
//! plain text.

use std::fmt::Write as _;

/// Where the plot starts (the lane labels sit left of it), in SVG units.
pub const PLOT_LEFT: f64 = 150.0;
/// The plot's width.
pub const PLOT_WIDTH: f64 = 1100.0;
/// The whole drawing's width.
pub const WIDTH: f64 = PLOT_LEFT + PLOT_WIDTH + 20.0;

/// Escapes text for an HTML or SVG text node or a double-quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Maps run time (µs since the run started) to x.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// The run's length (µs), at least 1.
    pub span_us: u64,
}

impl Scale {
    /// A scale over `[0, span_us]`.
    pub fn new(span_us: u64) -> Scale {
        Scale {
            span_us: span_us.max(1),
        }
    }

    /// The x of time `t_us` (clamped to the plot).
    pub fn x(&self, t_us: u64) -> f64 {
        let t = t_us.min(self.span_us) as f64;
        PLOT_LEFT + t / self.span_us as f64 * PLOT_WIDTH
    }

    /// The bucket of `t_us` among `n` equal buckets.
    pub fn bucket(&self, t_us: u64, n: usize) -> usize {
        let i = (t_us.min(self.span_us) as u128 * n as u128 / (self.span_us as u128 + 1)) as usize;
        i.min(n - 1)
    }

    /// The time range of bucket `i` of `n` (µs).
    pub fn bucket_range(&self, i: usize, n: usize) -> (u64, u64) {
        let w = self.span_us as u128 + 1;
        let from = (i as u128 * w / n as u128) as u64;
        let to = ((i as u128 + 1) * w / n as u128) as u64;
        (from, to)
    }
}

/// An SVG document under construction. Writing into a `String` cannot fail, so the
/// `let _ = write!(..)` below discard an always-`Ok`.
#[derive(Debug, Default)]
pub struct Svg {
    out: String,
}

/// Rounds to one decimal for compact output.
fn r(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

impl Svg {
    /// An empty drawing.
    pub fn new() -> Svg {
        Svg::default()
    }

    /// A rectangle of `class`, with a hover title and extra attributes (already escaped).
    pub fn rect(&mut self, (x, y, w, h): (f64, f64, f64, f64), class: &str, title: &str) {
        let _ = write!(
            self.out,
            r#"<rect class="{class}" x="{}" y="{}" width="{}" height="{}">"#,
            r(x),
            r(y),
            r(w.max(1.0)),
            r(h)
        );
        self.title_and_close(title, "rect");
    }

    /// A mark (a small glyph from `path` at `(x, y)`) of `class`, with a hover title and
    /// extra attributes written as they are (`data-id="..."`, escaped by the caller).
    pub fn mark(&mut self, (x, y): (f64, f64), path: &str, class: &str, attrs: &str, title: &str) {
        let _ = write!(
            self.out,
            r#"<path class="{class}" {attrs} transform="translate({},{})" d="{path}">"#,
            r(x),
            r(y)
        );
        self.title_and_close(title, "path");
    }

    /// A line of `class`, with no title.
    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), class: &str) {
        let _ = write!(
            self.out,
            r#"<line class="{class}" x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
            r(x1),
            r(y1),
            r(x2),
            r(y2)
        );
    }

    /// Text of `class` at `(x, y)`.
    pub fn text(&mut self, (x, y): (f64, f64), class: &str, text: &str) {
        let _ = write!(
            self.out,
            r#"<text class="{class}" x="{}" y="{}">{}</text>"#,
            r(x),
            r(y),
            esc(text)
        );
    }

    /// Opens a group of `class`.
    pub fn open_group(&mut self, class: &str) {
        let _ = write!(self.out, r#"<g class="{class}">"#);
    }

    /// Closes the last group.
    pub fn close_group(&mut self) {
        self.out.push_str("</g>");
    }

    fn title_and_close(&mut self, title: &str, tag: &str) {
        if title.is_empty() {
            let _ = write!(self.out, "</{tag}>");
        } else {
            let _ = write!(self.out, "<title>{}</title></{tag}>", esc(title));
        }
    }

    /// The finished `<svg>` element, `height` tall.
    pub fn finish(self, height: f64, label: &str) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline" viewBox="0 0 {WIDTH} {}" width="{WIDTH}" height="{}" role="img" aria-label="{}">{}</svg>"#,
            r(height),
            r(height),
            esc(label),
            self.out
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_timeline_cannot_open_a_tag() {
        assert_eq!(
            esc(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(esc("a\u{0}b"), "a\u{fffd}b");
    }

    #[test]
    fn the_scale_maps_the_run_onto_the_plot_and_buckets_cover_it() {
        let s = Scale::new(1_000_000);
        assert_eq!(s.x(0), PLOT_LEFT);
        assert_eq!(s.x(1_000_000), PLOT_LEFT + PLOT_WIDTH);
        assert_eq!(s.x(5_000_000), PLOT_LEFT + PLOT_WIDTH);
        assert_eq!(s.bucket(0, 10), 0);
        assert_eq!(s.bucket(1_000_000, 10), 9);
        let (from, to) = s.bucket_range(9, 10);
        assert!(from <= 1_000_000 && 1_000_000 < to, "{from}..{to}");
        for t in [0, 99_999, 100_001, 555_555, 999_999] {
            let (from, to) = s.bucket_range(s.bucket(t, 10), 10);
            assert!(from <= t && t < to, "{t}: {from}..{to}");
        }
    }
}
