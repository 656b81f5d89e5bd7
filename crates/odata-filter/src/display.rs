//! Canonical OData text for a tree.
//!
//! Every operand of `and`, `or` and `not` that is not atomic is parenthesised, so the text
//! re-parses to the same tree whatever the operands are: `(x eq 1) and (t/any(...))`.

use std::fmt::{self, Display, Formatter, Write};

use chrono::SecondsFormat;

use crate::ast::{
    Comparison, Expr, GeoDistance, GeoPoint, IsMatch, Lambda, Literal, Operand, Path, QueryType,
    SearchIn, SearchMode,
};

/// Writes `s` as a single-quoted OData string, doubling quotes.
fn quoted(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for c in s.chars() {
        if c == '\'' {
            f.write_str("''")?;
        } else {
            f.write_char(c)?;
        }
    }
    f.write_char('\'')
}

/// A float as the lexer reads it back: `NaN`, `INF`, `-INF`, or text with `.` or `e`.
fn double(f: &mut Formatter<'_>, v: f64) -> fmt::Result {
    if v.is_nan() {
        f.write_str("NaN")
    } else if v == f64::INFINITY {
        f.write_str("INF")
    } else if v == f64::NEG_INFINITY {
        f.write_str("-INF")
    } else {
        // Debug always includes '.' or an exponent ("1.0", "1e300"), so it stays a double.
        write!(f, "{v:?}")
    }
}

fn point(f: &mut Formatter<'_>, p: &GeoPoint) -> fmt::Result {
    double(f, p.lon)?;
    f.write_char(' ')?;
    double(f, p.lat)
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Double(d) => double(f, *d),
            Literal::String(s) => quoted(f, s),
            Literal::DateTime(dt) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

impl Display for Path {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in self.segments() {
            if !first {
                f.write_char('/')?;
            }
            first = false;
            f.write_str(seg.as_str())?;
        }
        Ok(())
    }
}

/// Whether `expr` prints as one unit that needs no parentheses as an operand.
fn is_atom(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Bool(_)
            | Expr::Path(_)
            | Expr::Lambda(_)
            | Expr::SearchIn(_)
            | Expr::IsMatch(_)
            | Expr::GeoIntersects(_)
    )
}

fn operand(f: &mut Formatter<'_>, expr: &Expr) -> fmt::Result {
    if is_atom(expr) {
        write!(f, "{expr}")
    } else {
        write!(f, "({expr})")
    }
}

fn joined(f: &mut Formatter<'_>, items: &[Expr], word: &str) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            write!(f, " {word} ")?;
        }
        operand(f, item)?;
    }
    Ok(())
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Not(inner) => {
                f.write_str("not ")?;
                operand(f, inner)
            }
            Expr::And(items) if items.is_empty() => f.write_str("true"),
            Expr::Or(items) if items.is_empty() => f.write_str("false"),
            // A one-item list only arises when built by hand; parenthesise it like an operand.
            Expr::And(items) | Expr::Or(items) if items.len() == 1 => joined(f, items, ""),
            Expr::And(items) => joined(f, items, "and"),
            Expr::Or(items) => joined(f, items, "or"),
            Expr::Compare(c) => write!(f, "{c}"),
            Expr::Lambda(l) => write!(f, "{l}"),
            Expr::SearchIn(s) => write!(f, "{s}"),
            Expr::IsMatch(m) => write!(f, "{m}"),
            Expr::GeoIntersects(g) => {
                write!(f, "geo.intersects({}, geography'POLYGON((", g.target)?;
                for (i, p) in g.polygon.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    point(f, p)?;
                }
                f.write_str("))')")
            }
        }
    }
}

impl Display for GeoDistance {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "geo.distance({}, geography'POINT(", self.target)?;
        point(f, &self.point)?;
        f.write_str(")')")
    }
}

impl Display for Comparison {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.operand {
            Operand::Path(p) => write!(f, "{p}")?,
            Operand::GeoDistance(g) => write!(f, "{g}")?,
        }
        write!(f, " {} {}", self.op.keyword(), self.value)
    }
}

impl Display for Lambda {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let word = match self.kind {
            crate::ast::LambdaKind::Any => "any",
            crate::ast::LambdaKind::All => "all",
        };
        write!(f, "{}/{word}(", self.collection)?;
        if let Some(body) = &self.body {
            write!(f, "{}: {}", body.variable, body.predicate)?;
        }
        f.write_char(')')
    }
}

impl Display for SearchIn {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "search.in({}, ", self.target)?;
        quoted(f, &self.values)?;
        if let Some(d) = &self.delimiters {
            f.write_str(", ")?;
            quoted(f, d)?;
        }
        f.write_char(')')
    }
}

impl Display for IsMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(if self.scoring {
            "search.ismatchscoring("
        } else {
            "search.ismatch("
        })?;
        quoted(f, &self.query)?;
        // The grammar needs the field list before the mode; an absent list prints as ''.
        if self.fields.is_some() || self.mode.is_some() {
            f.write_str(", ")?;
            quoted(f, self.fields.as_deref().unwrap_or(""))?;
        }
        if let Some((qt, sm)) = self.mode {
            let qt = match qt {
                QueryType::Simple => "simple",
                QueryType::Full => "full",
            };
            let sm = match sm {
                SearchMode::Any => "any",
                SearchMode::All => "all",
            };
            write!(f, ", '{qt}', '{sm}'")?;
        }
        f.write_char(')')
    }
}
