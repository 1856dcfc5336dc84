//! Writing series straight into the Prometheus text exposition, for what is read at scrape
//! time: such a series shows exactly the current state (a partition no longer led here is
//! simply not written), where a recorder's gauge would keep its last value until it idles out.

use std::fmt::Write as _;

/// Starts a family: its HELP and TYPE lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample of `name` with `labels`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, label)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape(label));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A family of one unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    family(out, name, kind, help);
    sample(out, name, &[], value);
}

/// A label value escaped as the text format wants (backslash, double quote, newline).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_are_written_in_the_text_format() {
        let mut out = String::new();
        super::family(&mut out, "x_total", "counter", "Things.");
        super::sample(&mut out, "x_total", &[("a", "b\"c"), ("d", "e")], 2.5);
        super::sample(&mut out, "x_total", &[], 1.0);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"b\\\"c\",d=\"e\"} 2.5\nx_total 1\n"
        );
    }
}
