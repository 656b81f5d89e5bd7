//! Chargeback export: usage rows as CSV (RFC 4180: a header row, CRLF line ends, fields with
//! a comma, a quote or a line break quoted, quotes doubled). Values are written as they are;
//! nothing is prefixed to defuse spreadsheet formulas, so the numbers and names round-trip.

use std::fmt::Write;

use chrono::SecondsFormat;

use crate::{GroupBy, UsageRow};

const COUNTS: [&str; 10] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
    "documents",
    "errors",
    "cache_hits",
    "cost",
    "unpriced",
];

/// Renders `rows` (from a query grouped by `group_by`) with a header row. Columns:
/// `period_start` (RFC 3339, UTC), then `kind,model`, `deployment` or `key_id` when grouped,
/// then the counts, the cost (a decimal in the price table's currency) and the unpriced calls.
/// An absent group value is an empty field.
pub fn usage_csv(rows: &[UsageRow], group_by: GroupBy) -> String {
    let mut out = String::new();
    let mut header = vec!["period_start"];
    if group_by == GroupBy::Model {
        header.push("kind");
    }
    header.extend(group_by.column());
    header.extend(COUNTS);
    write_record(&mut out, header);
    for row in rows {
        let mut fields = vec![row.period_start.to_rfc3339_opts(SecondsFormat::Secs, true)];
        if group_by == GroupBy::Model {
            fields.push(row.kind.map(|k| k.as_str()).unwrap_or("").to_owned());
        }
        if group_by != GroupBy::None {
            fields.push(row.group.clone().unwrap_or_default());
        }
        fields.extend(
            [
                row.requests,
                row.prompt_tokens,
                row.completion_tokens,
                row.cached_tokens,
                row.total_tokens,
                row.documents,
                row.errors,
                row.cache_hits,
            ]
            .map(|n| n.to_string()),
        );
        fields.push(pico_decimal(row.cost));
        fields.push(row.unpriced.to_string());
        write_record(&mut out, fields);
    }
    out
}

/// Pico-units (10^-12) as an exact decimal without trailing zeros: `0.00275`, `3`.
pub fn pico_decimal(pico: u64) -> String {
    const UNIT: u64 = 1_000_000_000_000;
    let (whole, fraction) = (pico / UNIT, pico % UNIT);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:012}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Appends one CSV record (with its CRLF).
pub fn write_record<S: AsRef<str>>(out: &mut String, fields: impl IntoIterator<Item = S>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, field.as_ref());
    }
    out.push_str("\r\n");
}

fn write_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        let _ = write!(out, "\"{}\"", field.replace('"', "\"\""));
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\rhere", "\"cr\rhere\""),
            ("  spaces kept  ", "  spaces kept  "),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            write_field(&mut out, input);
            assert_eq!(out, expected, "{input:?}");
        }
    }

    #[test]
    fn costs_are_exact_decimals() {
        assert_eq!(pico_decimal(0), "0");
        assert_eq!(pico_decimal(1), "0.000000000001");
        assert_eq!(pico_decimal(2_750_000_000), "0.00275");
        assert_eq!(pico_decimal(3_000_000_000_000), "3");
    }

    #[test]
    fn a_record_ends_with_crlf() {
        let mut out = String::new();
        write_record(&mut out, ["a", "b,c"]);
        assert_eq!(out, "a,\"b,c\"\r\n");
    }
}
