//! The two other OData parameters of a search request that name fields: `$orderby` and
//! `$select`. A router must check them for fields the caller may not see, and the emulator
//! must apply them, so they share the filter's lexer and path rules.

use std::fmt::{self, Display, Formatter};

use crate::ast::{GeoDistance, Path, PathRoot};
use crate::lexer::{lex, Func, Tok};
use crate::parser::Parser;
use crate::ParseError;

/// Most sort keys Azure accepts in one `$orderby`.
pub const MAX_ORDER_BY_CLAUSES: usize = 32;

/// What one `$orderby` clause sorts by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    /// A sortable field.
    Field(Path),
    /// `search.score()`: relevance.
    Score,
    /// `geo.distance(field, geography'POINT(...)')`.
    GeoDistance(GeoDistance),
}

/// One `$orderby` clause: a key and a direction (ascending unless `desc`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    /// What to sort by.
    pub key: SortKey,
    /// `desc` was given.
    pub descending: bool,
}

impl Display for OrderBy {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.key {
            SortKey::Field(p) => write!(f, "{p}")?,
            SortKey::Score => f.write_str("search.score()")?,
            SortKey::GeoDistance(g) => write!(f, "{g}")?,
        }
        f.write_str(if self.descending { " desc" } else { " asc" })
    }
}

/// Parses `$orderby`: `clause (',' clause)*`, each clause a field path, `search.score()` or
/// `geo.distance(...)`, optionally followed by `asc` or `desc`. At most
/// [`MAX_ORDER_BY_CLAUSES`] clauses.
pub fn parse_order_by(input: &str) -> Result<Vec<OrderBy>, ParseError> {
    let mut p = Parser::for_clauses(input)?;
    let mut clauses = Vec::new();
    loop {
        let pos = p.pos();
        let key = match p.peek().clone() {
            Tok::Func(Func::Score) => {
                p.bump();
                p.expect(&Tok::LParen, "'('")?;
                p.expect(&Tok::RParen, "')'")?;
                SortKey::Score
            }
            Tok::Func(Func::GeoDistance) => {
                p.bump();
                p.expect(&Tok::LParen, "'('")?;
                let distance = p.geo_distance_args()?;
                p.expect(&Tok::RParen, "')'")?;
                SortKey::GeoDistance(distance)
            }
            Tok::Word(_) => SortKey::Field(p.field_path()?),
            other => {
                return Err(ParseError::new(
                    pos,
                    format!(
                        "expected a field, search.score() or geo.distance, found {}",
                        other.describe()
                    ),
                ))
            }
        };
        let descending = if p.is_word("desc") {
            p.bump();
            true
        } else {
            if p.is_word("asc") {
                p.bump();
            }
            false
        };
        clauses.push(OrderBy { key, descending });
        if clauses.len() > MAX_ORDER_BY_CLAUSES {
            return Err(ParseError::new(
                pos,
                format!("$orderby takes at most {MAX_ORDER_BY_CLAUSES} clauses"),
            ));
        }
        match p.peek() {
            Tok::Comma => {
                p.bump();
            }
            Tok::Eof => return Ok(clauses),
            other => {
                return Err(ParseError::new(
                    p.pos(),
                    format!(
                        "expected ',' or end of $orderby, found {}",
                        other.describe()
                    ),
                ))
            }
        }
    }
}

/// Parses `$select`: `*` (returns `None`: every retrievable field) or a comma-separated list of
/// field paths.
pub fn parse_select(input: &str) -> Result<Option<Vec<Path>>, ParseError> {
    if input.trim() == "*" {
        return Ok(None);
    }
    let mut p = Parser::for_clauses(input)?;
    let mut fields = Vec::new();
    loop {
        fields.push(p.field_path()?);
        match p.peek() {
            Tok::Comma => {
                p.bump();
            }
            Tok::Eof => return Ok(Some(fields)),
            other => {
                return Err(ParseError::new(
                    p.pos(),
                    format!("expected ',' or end of $select, found {}", other.describe()),
                ))
            }
        }
    }
}

impl Parser {
    fn for_clauses(input: &str) -> Result<Self, ParseError> {
        if input.len() > crate::MAX_INPUT_LEN {
            return Err(ParseError::new(0, "the parameter is too long"));
        }
        let p = Parser::new(lex(input)?);
        if p.peek() == &Tok::Eof {
            return Err(ParseError::new(0, "the parameter is empty"));
        }
        Ok(p)
    }

    /// A plain field path (no lambda, no range variable).
    fn field_path(&mut self) -> Result<Path, ParseError> {
        let pos = self.pos();
        let path = self.path_arg()?;
        if path.root() != PathRoot::Field {
            return Err(ParseError::new(pos, "expected a field path"));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_clauses_parse_with_directions() {
        let cases = [
            ("Rating", "Rating asc"),
            ("Rating desc", "Rating desc"),
            ("Rating asc, Name", "Rating asc, Name asc"),
            (
                "search.score() desc,Address/City",
                "search.score() desc, Address/City asc",
            ),
            (
                "geo.distance(Location, geography'POINT(-122 47.5)') asc",
                "geo.distance(Location, geography'POINT(-122.0 47.5)') asc",
            ),
            (
                "geo.distance(geography'POINT(1 2)', Location)",
                "geo.distance(Location, geography'POINT(1.0 2.0)') asc",
            ),
        ];
        for (input, expected) in cases {
            let clauses = parse_order_by(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let text: Vec<String> = clauses.iter().map(ToString::to_string).collect();
            assert_eq!(text.join(", "), expected);
            assert_eq!(parse_order_by(expected).unwrap(), clauses);
        }
    }

    #[test]
    fn bad_order_by_is_rejected_with_a_position() {
        let cases = [
            ("", 0),
            ("Rating desc asc", 12),
            ("Rating,", 7),
            ("Rating DESC", 7),
            ("Tags/any()", 0),
            ("search.score", 12),
            ("x eq 1", 2),
            ("'a'", 0),
            ("Rating) , (x", 6),
        ];
        for (input, position) in cases {
            let err = parse_order_by(input).expect_err(input);
            assert_eq!(err.position, position, "{input}: {err}");
        }
        let many = vec!["a"; MAX_ORDER_BY_CLAUSES + 1].join(",");
        assert!(parse_order_by(&many).is_err());
        assert!(parse_order_by(&vec!["a"; MAX_ORDER_BY_CLAUSES].join(",")).is_ok());
    }

    #[test]
    fn select_lists_fields_or_everything() {
        assert_eq!(parse_select("*").unwrap(), None);
        assert_eq!(parse_select(" * ").unwrap(), None);
        let fields = parse_select("id, Address/City,name").unwrap().unwrap();
        let names: Vec<String> = fields.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["id", "Address/City", "name"]);
        assert_eq!(fields[1].position(), 4);
        for bad in ["", "id,", "id name", "*,id", "a/any()", "and", "id;x"] {
            assert!(parse_select(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn search_score_is_not_a_filter() {
        let err = crate::parse("search.score() gt 1").unwrap_err();
        assert!(err.message.contains("$orderby"));
    }
}
