//! Turns filter text into tokens, each with its character offset.
//!
//! Only ASCII outside string literals: any other character (non-breaking spaces, fullwidth or
//! look-alike letters, control characters) is an error rather than something to guess about.

use chrono::{DateTime, FixedOffset};

use crate::ast::GeoPoint;
use crate::ParseError;

/// The functions of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    SearchIn,
    IsMatch,
    IsMatchScoring,
    /// `search.score()`, only meaningful in `$orderby`.
    Score,
    GeoDistance,
    GeoIntersects,
}

/// A `geography'...'` literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Geo {
    Point(GeoPoint),
    Polygon(Vec<GeoPoint>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword (`and`, `true`, `any`...); the parser tells them apart.
    Word(String),
    Func(Func),
    Str(String),
    Int(i64),
    Double(f64),
    DateTime(DateTime<FixedOffset>),
    Geo(Geo),
    LParen,
    RParen,
    Comma,
    Slash,
    Colon,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Func(_) => "function call".to_owned(),
            Tok::Str(_) => "string literal".to_owned(),
            Tok::Int(_) | Tok::Double(_) => "number".to_owned(),
            Tok::DateTime(_) => "date-time literal".to_owned(),
            Tok::Geo(_) => "geography literal".to_owned(),
            Tok::LParen => "'('".to_owned(),
            Tok::RParen => "')'".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::Slash => "'/'".to_owned(),
            Tok::Colon => "':'".to_owned(),
            Tok::Eof => "end of filter".to_owned(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

/// Splits `input` into tokens; the last one is always [`Tok::Eof`].
pub(crate) fn lex(input: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let mut lx = Lexer {
        chars: input.chars().collect(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_whitespace();
        let start = lx.pos;
        let Some(c) = lx.peek(0) else {
            out.push((Tok::Eof, start));
            return Ok(out);
        };
        let tok = match c {
            '(' => lx.single(Tok::LParen),
            ')' => lx.single(Tok::RParen),
            ',' => lx.single(Tok::Comma),
            '/' => lx.single(Tok::Slash),
            ':' => lx.single(Tok::Colon),
            '\'' => Tok::Str(lx.string()?),
            '0'..='9' | '-' | '+' => lx.number_or_date()?,
            c if c.is_ascii_alphabetic() || c == '_' => lx.word()?,
            other => {
                return Err(ParseError::new(
                    start,
                    format!("unexpected character {}", describe_char(other)),
                ))
            }
        };
        out.push((tok, start));
    }
}

fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        tok
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(0), Some(' ' | '\t' | '\r' | '\n')) {
            self.pos += 1;
        }
    }

    /// A single-quoted string; `''` is a quote. The opening quote is at `self.pos`.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.peek(0) {
                None => return Err(ParseError::new(start, "unterminated string literal")),
                Some('\'') if self.peek(1) == Some('\'') => {
                    value.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(value);
                }
                Some(c) => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0).filter(|&c| keep(c)) {
            s.push(c);
            self.pos += 1;
        }
        s
    }

    /// After a literal, the next character must not glue onto it (`5and`, `1.2.3`).
    fn expect_boundary(&self, start: usize, what: &str) -> Result<(), ParseError> {
        match self.peek(0) {
            Some(c) if is_word_char(c) || c == '.' || c == '\'' => {
                Err(ParseError::new(start, format!("malformed {what}")))
            }
            _ => Ok(()),
        }
    }

    fn word(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let word = self.take_while(is_word_char);
        if (word == "search" || word == "geo") && self.peek(0) == Some('.') {
            self.pos += 1;
            let name = self.take_while(is_word_char);
            let func = match (word.as_str(), name.as_str()) {
                ("search", "in") => Func::SearchIn,
                ("search", "ismatch") => Func::IsMatch,
                ("search", "ismatchscoring") => Func::IsMatchScoring,
                ("search", "score") => Func::Score,
                ("geo", "distance") => Func::GeoDistance,
                ("geo", "intersects") => Func::GeoIntersects,
                _ => {
                    return Err(ParseError::new(
                        start,
                        format!("unknown function '{word}.{name}'"),
                    ))
                }
            };
            return Ok(Tok::Func(func));
        }
        if self.peek(0) == Some('.') {
            return Err(ParseError::new(self.pos, "unexpected character '.'"));
        }
        if self.peek(0) == Some('\'') {
            if word != "geography" {
                return Err(ParseError::new(
                    start,
                    format!("unsupported typed literal '{word}'"),
                ));
            }
            let body_start = self.pos + 1;
            let body = self.string()?;
            return Ok(Tok::Geo(parse_geography(&body, body_start)?));
        }
        Ok(match word.as_str() {
            "NaN" => Tok::Double(f64::NAN),
            "INF" => Tok::Double(f64::INFINITY),
            _ => Tok::Word(word),
        })
    }

    fn number_or_date(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        // date_part starts with four digits and a dash.
        let is_date = (0..4).all(|i| self.peek(i).is_some_and(|c| c.is_ascii_digit()))
            && self.peek(4) == Some('-');
        if is_date {
            let text = self
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | ':' | '.'));
            let dt = parse_datetime(&text).ok_or_else(|| {
                ParseError::new(start, format!("malformed date-time literal '{text}'"))
            })?;
            self.expect_boundary(start, "date-time literal")?;
            return Ok(Tok::DateTime(dt));
        }
        let mut text = String::new();
        if let Some(sign @ ('-' | '+')) = self.peek(0) {
            text.push(sign);
            self.pos += 1;
            if sign == '-' && self.peek(0) == Some('I') {
                let word = self.take_while(is_word_char);
                if word == "INF" {
                    self.expect_boundary(start, "number")?;
                    return Ok(Tok::Double(f64::NEG_INFINITY));
                }
                return Err(ParseError::new(start, "malformed number"));
            }
        }
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return Err(ParseError::new(
                start,
                format!("unexpected character '{}'", text),
            ));
        }
        text.push_str(&digits);
        let mut is_double = false;
        if self.peek(0) == Some('.') {
            self.pos += 1;
            let frac = self.take_while(|c| c.is_ascii_digit());
            if frac.is_empty() {
                return Err(ParseError::new(start, "malformed number"));
            }
            text.push('.');
            text.push_str(&frac);
            is_double = true;
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            self.pos += 1;
            text.push('e');
            if let Some(sign @ ('-' | '+')) = self.peek(0) {
                text.push(sign);
                self.pos += 1;
            }
            let exp = self.take_while(|c| c.is_ascii_digit());
            if exp.is_empty() {
                return Err(ParseError::new(start, "malformed number"));
            }
            text.push_str(&exp);
            is_double = true;
        }
        self.expect_boundary(start, "number")?;
        if is_double {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Tok::Double(v)),
                _ => Err(ParseError::new(start, "number out of range")),
            }
        } else {
            text.parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| ParseError::new(start, "integer out of range"))
        }
    }
}

/// `YYYY-MM-DDThh:mm[:ss[.fff]](Z|±hh:mm)`, as in Azure's `date_time_offset_literal`.
pub(crate) fn parse_datetime(text: &str) -> Option<DateTime<FixedOffset>> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let shape_ok = b.len() >= 17
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16);
    if !shape_ok {
        return None;
    }
    let (main, zone) = if let Some(main) = text.strip_suffix('Z') {
        (main, "Z")
    } else {
        let split = text.len().checked_sub(6)?;
        let zone = text.get(split..)?;
        let zb = zone.as_bytes();
        let zone_ok = matches!(zb[0], b'+' | b'-')
            && zb[1..3].iter().all(u8::is_ascii_digit)
            && zb[3] == b':'
            && zb[4..6].iter().all(u8::is_ascii_digit);
        if !zone_ok {
            return None;
        }
        (text.get(..split)?, zone)
    };
    let time = main.get(11..)?;
    let time_ok = match time.len() {
        5 => true,
        8 => time.as_bytes()[5] == b':' && digits(17..19),
        n if n > 9 => {
            time.as_bytes()[5] == b':'
                && digits(17..19)
                && time.as_bytes()[8] == b'.'
                && time.as_bytes()[9..].iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    if !time_ok {
        return None;
    }
    let with_seconds = if time.len() == 5 {
        format!("{main}:00{zone}")
    } else {
        format!("{main}{zone}")
    };
    DateTime::parse_from_rfc3339(&with_seconds).ok()
}

/// The WKT inside `geography'...'`: `POINT(lon lat)` or `POLYGON((lon lat, ...))`.
fn parse_geography(body: &str, offset: usize) -> Result<Geo, ParseError> {
    let err = |msg: &str| ParseError::new(offset, format!("malformed geography literal: {msg}"));
    let compact = body.trim();
    let point_list = |inner: &str| -> Result<Vec<GeoPoint>, ParseError> {
        inner
            .split(',')
            .map(|pair| {
                let mut parts = pair.split([' ', '\t']).filter(|s| !s.is_empty());
                let (Some(lon), Some(lat), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(err("expected 'lon lat'"));
                };
                let lon = parse_coordinate(lon).ok_or_else(|| err("bad longitude"))?;
                let lat = parse_coordinate(lat).ok_or_else(|| err("bad latitude"))?;
                if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
                    return Err(err("coordinates out of range"));
                }
                Ok(GeoPoint { lon, lat })
            })
            .collect()
    };
    let inside = |s: &str, open: &str, close: &str| -> Option<String> {
        let rest = s.strip_prefix(open)?.trim_start();
        let rest = rest.strip_prefix('(')?;
        let rest = rest.strip_suffix(close)?;
        Some(rest.to_owned())
    };
    if let Some(inner) = inside(compact, "POINT", ")") {
        let points = point_list(&inner)?;
        return match points.as_slice() {
            [p] => Ok(Geo::Point(*p)),
            _ => Err(err("POINT takes one coordinate pair")),
        };
    }
    if let Some(inner) = inside(compact, "POLYGON", ")") {
        let ring = inner
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.trim_end().strip_suffix(')'))
            .ok_or_else(|| err("POLYGON takes one ring in double parentheses"))?;
        if ring.contains(['(', ')']) {
            return Err(err("only a single ring is supported"));
        }
        let points = point_list(ring)?;
        if points.len() < 4 || points.first() != points.last() {
            return Err(err(
                "a polygon ring needs at least 4 points, the last equal to the first",
            ));
        }
        return Ok(Geo::Polygon(points));
    }
    Err(err("expected POINT(...) or POLYGON((...))"))
}

/// A finite decimal coordinate: sign, digits, optional fraction and exponent.
fn parse_coordinate(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let ok_chars = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if !ok_chars || !body.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}
