//! Recursive-descent parser from tokens to [`Expr`].
//!
//! Precedence, loosest first: `or`, `and`, comparison, `not`. As in Azure, `not` binds tighter
//! than a comparison, so `not Rating gt 5` is an error (write `not (Rating gt 5)`).

use crate::ast::{
    is_valid_ident, CompareOp, Comparison, Expr, GeoDistance, GeoIntersects, GeoPoint, Ident,
    IsMatch, Lambda, LambdaBody, LambdaKind, Literal, Operand, Path, PathRoot, QueryType, SearchIn,
    SearchMode,
};
use crate::lexer::{lex, Func, Geo, Tok};
use crate::ParseError;

/// Longest filter accepted, in bytes: a hostile filter cannot make the parser work for long.
pub const MAX_INPUT_LEN: usize = 32 * 1024;

/// Deepest tree accepted (see [`Expr::depth`]): the parser, serialiser and evaluator recurse,
/// and a hostile filter must not exhaust the stack. The most deeply nested text accepted needs
/// under 512 KiB of stack in a release build (under 1 MiB unoptimised), within a
/// tokio worker's 2 MiB. Note that [`Expr::and`] can add a level.
pub const MAX_DEPTH: usize = 100;

/// Parses an Azure AI Search `$filter` expression.
///
/// Strict and total: any input outside the grammar, or longer than [`MAX_INPUT_LEN`] bytes, or
/// nested deeper than [`MAX_DEPTH`], is an error naming the character offset of the problem.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(ParseError::new(
            0,
            format!("the filter is longer than {MAX_INPUT_LEN} bytes"),
        ));
    }
    let mut parser = Parser::new(lex(input)?);
    if parser.peek() == &Tok::Eof {
        return Err(ParseError::new(0, "the filter is empty"));
    }
    let expr = parser.or_expr()?;
    match parser.peek() {
        Tok::Eof if expr.depth() > MAX_DEPTH => Err(too_deep(parser.deepest.1)),
        Tok::Eof => Ok(expr),
        other => Err(ParseError::new(
            parser.pos(),
            format!("unexpected {}", other.describe()),
        )),
    }
}

/// Limit on nested parentheses, `not` and lambdas in the text, guarding the parser's own
/// recursion. Canonical text for a tree of depth `d` nests at most `2 * d` deep, so any tree
/// accepted under [`MAX_DEPTH`] prints as text that parses again.
const MAX_NESTING: usize = 2 * MAX_DEPTH + 2;

fn too_deep(position: usize) -> ParseError {
    ParseError::new(
        position,
        format!("the filter is nested more than {MAX_DEPTH} levels deep"),
    )
}

/// What a primary position can hold before we know whether a comparison follows.
enum Primary {
    /// Already a boolean expression (parenthesised, lambda, boolean function).
    Bool(Expr),
    Path(Path),
    GeoDistance(GeoDistance),
    Constant(Literal),
}

pub(crate) struct Parser {
    tokens: Vec<(Tok, usize)>,
    next: usize,
    /// Current nesting of parentheses, `not` and lambdas.
    depth: usize,
    /// The deepest nesting seen and where it was reached.
    deepest: (usize, usize),
    /// Range variables in scope, innermost last.
    scopes: Vec<String>,
}

impl Parser {
    pub(crate) fn new(tokens: Vec<(Tok, usize)>) -> Self {
        Self {
            tokens,
            next: 0,
            depth: 0,
            deepest: (0, 0),
            scopes: Vec::new(),
        }
    }

    pub(crate) fn peek(&self) -> &Tok {
        self.tokens.get(self.next).map_or(&Tok::Eof, |(t, _)| t)
    }

    pub(crate) fn pos(&self) -> usize {
        self.tokens
            .get(self.next)
            .or_else(|| self.tokens.last())
            .map_or(0, |(_, p)| *p)
    }

    pub(crate) fn bump(&mut self) -> (Tok, usize) {
        let tok = self
            .tokens
            .get(self.next)
            .cloned()
            .unwrap_or((Tok::Eof, self.pos()));
        if self.next < self.tokens.len() {
            self.next += 1;
        }
        tok
    }

    pub(crate) fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w == word)
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        ParseError::new(
            self.pos(),
            format!("expected {expected}, found {}", self.peek().describe()),
        )
    }

    pub(crate) fn expect(&mut self, tok: &Tok, expected: &str) -> Result<(), ParseError> {
        if self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn enter(&mut self, position: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > self.deepest.0 {
            self.deepest = (self.depth, position);
        }
        if self.depth > MAX_NESTING {
            return Err(too_deep(position));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn compare_op(&self) -> Option<CompareOp> {
        match self.peek() {
            Tok::Word(w) => CompareOp::from_keyword(w),
            _ => None,
        }
    }

    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.and_expr()?];
        while self.is_word("or") {
            self.bump();
            items.push(self.and_expr()?);
        }
        Ok(Expr::any_of(items))
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.comparison()?];
        while self.is_word("and") {
            self.bump();
            items.push(self.comparison()?);
        }
        Ok(Expr::all_of(items))
    }

    // The recursive path (or -> and -> comparison -> primary -> group -> or) is kept in small
    // functions; error building and the rest live in `#[inline(never)]` helpers, so that each
    // nesting level costs little stack even in debug builds.
    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let left_pos = self.pos();
        let left = match self.peek() {
            Tok::Word(w) if w == "not" => return self.not_expr(),
            Tok::LParen => self.group(),
            _ => self.primary(),
        };
        self.finish_comparison(left?, left_pos)
    }

    #[inline(never)]
    fn finish_comparison(&mut self, left: Primary, left_pos: usize) -> Result<Expr, ParseError> {
        let Some(op) = self.compare_op() else {
            return match left {
                Primary::Bool(e) => Ok(e),
                Primary::Path(p) => Ok(Expr::Path(p)),
                Primary::Constant(Literal::Bool(b)) => Ok(Expr::Bool(b)),
                Primary::Constant(_) => Err(ParseError::new(
                    left_pos,
                    "a constant is not a boolean expression",
                )),
                Primary::GeoDistance(_) => Err(ParseError::new(
                    left_pos,
                    "geo.distance must be compared with a number",
                )),
            };
        };
        let op_pos = self.pos();
        self.bump();
        let right_pos = self.pos();
        let right = self.primary()?;
        let (operand, op, value) = match (left, right) {
            (Primary::Path(p), Primary::Constant(c)) => (Operand::Path(p), op, c),
            (Primary::GeoDistance(g), Primary::Constant(c)) => (Operand::GeoDistance(g), op, c),
            (Primary::Constant(c), Primary::Path(p)) => (Operand::Path(p), op.flipped(), c),
            (Primary::Constant(c), Primary::GeoDistance(g)) => {
                (Operand::GeoDistance(g), op.flipped(), c)
            }
            (Primary::Constant(_), _) => {
                return Err(ParseError::new(
                    right_pos,
                    "a comparison must compare a field with a constant",
                ))
            }
            (Primary::Bool(_), _) => {
                return Err(ParseError::new(
                    left_pos,
                    "the left side of a comparison must be a field or geo.distance",
                ))
            }
            (_, _) => {
                return Err(ParseError::new(
                    right_pos,
                    "a comparison must compare a field with a constant",
                ))
            }
        };
        if matches!(operand, Operand::GeoDistance(_))
            && !matches!(value, Literal::Int(_) | Literal::Double(_))
        {
            return Err(ParseError::new(
                op_pos,
                "geo.distance must be compared with a number",
            ));
        }
        if self.compare_op().is_some() {
            return Err(ParseError::new(
                self.pos(),
                "comparisons cannot be chained; use 'and'",
            ));
        }
        Ok(Expr::Compare(Comparison { operand, op, value }))
    }

    /// `not` applies to the boolean primary right after it.
    fn not_expr(&mut self) -> Result<Expr, ParseError> {
        let (_, not_pos) = self.bump();
        self.enter(not_pos)?;
        let operand = if self.is_word("not") {
            self.not_expr()?
        } else {
            let pos = self.pos();
            let primary = self.primary()?;
            Self::not_operand(primary, pos)?
        };
        self.leave();
        self.finish_not(operand)
    }

    #[inline(never)]
    fn not_operand(primary: Primary, pos: usize) -> Result<Expr, ParseError> {
        match primary {
            Primary::Bool(e) => Ok(e),
            Primary::Path(p) => Ok(Expr::Path(p)),
            Primary::Constant(Literal::Bool(b)) => Ok(Expr::Bool(b)),
            Primary::Constant(_) | Primary::GeoDistance(_) => {
                Err(ParseError::new(pos, "'not' needs a boolean operand"))
            }
        }
    }

    #[inline(never)]
    fn finish_not(&self, operand: Expr) -> Result<Expr, ParseError> {
        if self.compare_op().is_some() {
            return Err(ParseError::new(
                self.pos(),
                "'not' binds tighter than comparisons; write 'not (a eq b)'",
            ));
        }
        Ok(Expr::Not(Box::new(operand)))
    }

    fn primary(&mut self) -> Result<Primary, ParseError> {
        match self.peek() {
            Tok::LParen => self.group(),
            Tok::Word(w) if !matches!(w.as_str(), "true" | "false" | "null") => {
                self.path_or_lambda()
            }
            _ => self.leaf(),
        }
    }

    fn group(&mut self) -> Result<Primary, ParseError> {
        let (_, pos) = self.bump();
        self.enter(pos)?;
        let inner = self.or_expr()?;
        self.expect(&Tok::RParen, "')'")?;
        self.leave();
        Ok(Primary::Bool(inner))
    }

    /// A constant or a function call.
    #[inline(never)]
    fn leaf(&mut self) -> Result<Primary, ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Word(w) => match w.as_str() {
                "true" => {
                    self.bump();
                    Ok(Primary::Constant(Literal::Bool(true)))
                }
                "false" => {
                    self.bump();
                    Ok(Primary::Constant(Literal::Bool(false)))
                }
                "null" => {
                    self.bump();
                    Ok(Primary::Constant(Literal::Null))
                }
                _ => self.path_or_lambda(),
            },
            Tok::Str(s) => {
                self.bump();
                Ok(Primary::Constant(Literal::String(s)))
            }
            Tok::Int(i) => {
                self.bump();
                Ok(Primary::Constant(Literal::Int(i)))
            }
            Tok::Double(d) => {
                self.bump();
                Ok(Primary::Constant(Literal::Double(d)))
            }
            Tok::DateTime(d) => {
                self.bump();
                Ok(Primary::Constant(Literal::DateTime(d)))
            }
            Tok::Func(f) => {
                self.bump();
                self.call(f, pos)
            }
            Tok::Geo(_) => Err(ParseError::new(
                pos,
                "a geography literal is only allowed inside geo.distance or geo.intersects",
            )),
            other => Err(ParseError::new(
                pos,
                format!("unexpected {}", other.describe()),
            )),
        }
    }

    /// An identifier that must not be a reserved word.
    fn ident(&mut self) -> Result<(Ident, usize), ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Word(w) if is_valid_ident(&w) => {
                self.bump();
                Ok((Ident::new(&w)?, pos))
            }
            Tok::Word(w) => Err(ParseError::new(pos, format!("unexpected '{w}'"))),
            _ => Err(self.unexpected("a field name")),
        }
    }

    /// `a/b/c`, `t/x`, or a lambda `a/b/any(...)`.
    fn path_or_lambda(&mut self) -> Result<Primary, ParseError> {
        let (first, pos) = self.ident()?;
        let root = if self.scopes.iter().any(|s| s == first.as_str()) {
            PathRoot::Variable
        } else if self.scopes.is_empty() {
            PathRoot::Field
        } else {
            return Err(ParseError::new(
                pos,
                format!(
                    "only range variables can be referenced inside a lambda expression, found '{first}'"
                ),
            ));
        };
        let mut segments = vec![first];
        while self.peek() == &Tok::Slash {
            self.bump();
            let kind = if self.is_word("any") {
                Some(LambdaKind::Any)
            } else if self.is_word("all") {
                Some(LambdaKind::All)
            } else {
                None
            };
            if let Some(kind) = kind {
                self.bump();
                let collection = Path::new(root, segments, pos);
                return Ok(Primary::Bool(self.lambda(kind, collection)?));
            }
            segments.push(self.ident()?.0);
        }
        Ok(Primary::Path(Path::new(root, segments, pos)))
    }

    fn lambda(&mut self, kind: LambdaKind, collection: Path) -> Result<Expr, ParseError> {
        let open = self.pos();
        self.expect(&Tok::LParen, "'('")?;
        self.enter(open)?;
        if kind == LambdaKind::Any && self.peek() == &Tok::RParen {
            self.bump();
            self.leave();
            return Ok(Expr::Lambda(Lambda {
                kind,
                collection,
                body: None,
            }));
        }
        let (variable, var_pos) = self.ident()?;
        if self.scopes.iter().any(|s| s == variable.as_str()) {
            return Err(ParseError::new(
                var_pos,
                format!("range variable '{variable}' is already in scope"),
            ));
        }
        self.expect(&Tok::Colon, "':'")?;
        self.scopes.push(variable.as_str().to_owned());
        let predicate = self.or_expr()?;
        self.scopes.pop();
        self.expect(&Tok::RParen, "')'")?;
        self.leave();
        Ok(Expr::Lambda(Lambda {
            kind,
            collection,
            body: Some(LambdaBody {
                variable,
                predicate: Box::new(predicate),
            }),
        }))
    }

    pub(crate) fn path_arg(&mut self) -> Result<Path, ParseError> {
        let pos = self.pos();
        match self.path_or_lambda()? {
            Primary::Path(p) => Ok(p),
            _ => Err(ParseError::new(pos, "expected a field path")),
        }
    }

    fn string_arg(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            _ => Err(self.unexpected("a string literal")),
        }
    }

    fn geo_arg(&mut self) -> Result<(Geo, usize), ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Geo(g) => {
                self.bump();
                Ok((g, pos))
            }
            _ => Err(self.unexpected("a geography literal")),
        }
    }

    fn point_arg(&mut self) -> Result<GeoPoint, ParseError> {
        match self.geo_arg()? {
            (Geo::Point(p), _) => Ok(p),
            (Geo::Polygon(_), pos) => Err(ParseError::new(pos, "expected a geography POINT")),
        }
    }

    /// The arguments of `geo.distance(...)`, in either order: `field, point` or `point, field`.
    pub(crate) fn geo_distance_args(&mut self) -> Result<GeoDistance, ParseError> {
        let distance = if matches!(self.peek(), Tok::Geo(_)) {
            let point = self.point_arg()?;
            self.expect(&Tok::Comma, "','")?;
            let target = self.path_arg()?;
            GeoDistance { target, point }
        } else {
            let target = self.path_arg()?;
            self.expect(&Tok::Comma, "','")?;
            let point = self.point_arg()?;
            GeoDistance { target, point }
        };
        Ok(distance)
    }

    fn call(&mut self, func: Func, pos: usize) -> Result<Primary, ParseError> {
        self.expect(&Tok::LParen, "'('")?;
        let result = match func {
            Func::Score => {
                return Err(ParseError::new(
                    pos,
                    "search.score() is only allowed in $orderby",
                ))
            }
            Func::SearchIn => {
                let target = self.path_arg()?;
                self.expect(&Tok::Comma, "','")?;
                let values = self.string_arg()?;
                let delimiters = if self.peek() == &Tok::Comma {
                    self.bump();
                    let d_pos = self.pos();
                    let d = self.string_arg()?;
                    if d.is_empty() {
                        return Err(ParseError::new(
                            d_pos,
                            "search.in delimiters must not be empty",
                        ));
                    }
                    Some(d)
                } else {
                    None
                };
                Primary::Bool(Expr::SearchIn(SearchIn {
                    target,
                    values,
                    delimiters,
                }))
            }
            Func::IsMatch | Func::IsMatchScoring => {
                if !self.scopes.is_empty() {
                    return Err(ParseError::new(
                        pos,
                        "search.ismatch cannot be used inside a lambda expression",
                    ));
                }
                let query = self.string_arg()?;
                let mut fields = None;
                let mut mode = None;
                if self.peek() == &Tok::Comma {
                    self.bump();
                    fields = Some(self.string_arg()?);
                    if self.peek() == &Tok::Comma {
                        self.bump();
                        let qt_pos = self.pos();
                        let query_type = match self.string_arg()?.as_str() {
                            "simple" => QueryType::Simple,
                            "full" => QueryType::Full,
                            _ => {
                                return Err(ParseError::new(
                                    qt_pos,
                                    "queryType must be 'simple' or 'full'",
                                ))
                            }
                        };
                        self.expect(&Tok::Comma, "','")?;
                        let sm_pos = self.pos();
                        let search_mode = match self.string_arg()?.as_str() {
                            "any" => SearchMode::Any,
                            "all" => SearchMode::All,
                            _ => {
                                return Err(ParseError::new(
                                    sm_pos,
                                    "searchMode must be 'any' or 'all'",
                                ))
                            }
                        };
                        mode = Some((query_type, search_mode));
                    }
                }
                Primary::Bool(Expr::IsMatch(IsMatch {
                    scoring: func == Func::IsMatchScoring,
                    query,
                    fields,
                    mode,
                    position: pos,
                }))
            }
            Func::GeoDistance => Primary::GeoDistance(self.geo_distance_args()?),
            Func::GeoIntersects => {
                let target = self.path_arg()?;
                self.expect(&Tok::Comma, "','")?;
                let polygon = match self.geo_arg()? {
                    (Geo::Polygon(p), _) => p,
                    (Geo::Point(_), gpos) => {
                        return Err(ParseError::new(gpos, "expected a geography POLYGON"))
                    }
                };
                Primary::Bool(Expr::GeoIntersects(GeoIntersects { target, polygon }))
            }
        };
        self.expect(&Tok::RParen, "')'")?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::FieldUse;
    use chrono::DateTime;

    fn canonical(input: &str) -> String {
        match parse(input) {
            Ok(e) => e.to_string(),
            Err(e) => panic!("{input:?} failed: {e}"),
        }
    }

    #[test]
    fn precedence_is_not_then_comparison_then_and_then_or() {
        let cases = [
            (
                "a eq 1 or b eq 2 and c eq 3",
                "(a eq 1) or ((b eq 2) and (c eq 3))",
            ),
            (
                "a eq 1 and b eq 2 or c eq 3",
                "((a eq 1) and (b eq 2)) or (c eq 3)",
            ),
            (
                "(a eq 1 or b eq 2) and c eq 3",
                "((a eq 1) or (b eq 2)) and (c eq 3)",
            ),
            ("not a and b", "(not a) and b"),
            ("not a or b", "(not a) or b"),
            ("not (a eq 1) or b", "(not (a eq 1)) or b"),
            ("not (a or b)", "not (a or b)"),
            ("not not a", "not (not a)"),
            ("a and b and c", "a and b and c"),
            ("a and (b and c)", "a and b and c"),
            ("(a or b) or (c or d)", "a or b or c or d"),
            ("a or b and c or d", "a or (b and c) or d"),
            ("((a))", "a"),
            ("(((a eq 1)))", "a eq 1"),
            ("5 lt x", "x gt 5"),
            ("5 ge x", "x le 5"),
            ("null eq x", "x eq null"),
            ("'a' ne x", "x ne 'a'"),
            ("true", "true"),
            ("not false", "not false"),
            ("isActive", "isActive"),
            (
                "not isActive and Rating gt 3",
                "(not isActive) and (Rating gt 3)",
            ),
            ("a\teq\t1\r\nand\nb", "(a eq 1) and b"),
        ];
        for (input, expected) in cases {
            assert_eq!(canonical(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn every_literal_kind_parses_to_its_value() {
        let dt = |s: &str| Literal::DateTime(DateTime::parse_from_rfc3339(s).unwrap());
        let cases = [
            ("null", Literal::Null),
            ("true", Literal::Bool(true)),
            ("false", Literal::Bool(false)),
            ("0", Literal::Int(0)),
            ("42", Literal::Int(42)),
            ("-7", Literal::Int(-7)),
            ("+7", Literal::Int(7)),
            ("9223372036854775807", Literal::Int(i64::MAX)),
            ("-9223372036854775808", Literal::Int(i64::MIN)),
            ("1.5", Literal::Double(1.5)),
            ("-0.25", Literal::Double(-0.25)),
            ("1e3", Literal::Double(1000.0)),
            ("2.5E-2", Literal::Double(0.025)),
            ("1e+2", Literal::Double(100.0)),
            ("NaN", Literal::Double(f64::NAN)),
            ("INF", Literal::Double(f64::INFINITY)),
            ("-INF", Literal::Double(f64::NEG_INFINITY)),
            ("''", Literal::String(String::new())),
            ("'abc'", Literal::String("abc".into())),
            ("'it''s'", Literal::String("it's".into())),
            ("''''", Literal::String("'".into())),
            (
                "'café ☕ \\ \" ) or (true'",
                Literal::String("café ☕ \\ \" ) or (true".into()),
            ),
            ("2024-01-01T00:00:00Z", dt("2024-01-01T00:00:00Z")),
            ("2024-01-01T00:00Z", dt("2024-01-01T00:00:00Z")),
            ("2024-06-30T23:59:59.123Z", dt("2024-06-30T23:59:59.123Z")),
            ("2024-01-01T02:00:00+02:00", dt("2024-01-01T02:00:00+02:00")),
            ("2023-12-31T16:00:00-08:00", dt("2023-12-31T16:00:00-08:00")),
        ];
        for (text, expected) in cases {
            let expr = parse(&format!("x eq {text}")).unwrap_or_else(|e| panic!("{text}: {e}"));
            let Expr::Compare(c) = &expr else {
                panic!("{text}: not a comparison: {expr:?}")
            };
            assert_eq!(c.value, expected, "literal {text}");
            assert_eq!(
                parse(&expr.to_string()).unwrap(),
                expr,
                "round trip of {text}"
            );
        }
    }

    #[test]
    fn every_function_parses_and_prints_canonically() {
        let cases = [
            ("search.in(city, 'a,b c')", "search.in(city, 'a,b c')"),
            ("search.in(city, 'a|b', '|')", "search.in(city, 'a|b', '|')"),
            ("search.in( city ,'x' )", "search.in(city, 'x')"),
            ("search.ismatch('luxury')", "search.ismatch('luxury')"),
            ("search.ismatch('lux*', 'Name,Description')", "search.ismatch('lux*', 'Name,Description')"),
            (
                "search.ismatch('\"a b\"~5', 'Description', 'full', 'any')",
                "search.ismatch('\"a b\"~5', 'Description', 'full', 'any')",
            ),
            ("search.ismatchscoring('pool')", "search.ismatchscoring('pool')"),
            (
                "search.ismatchscoring('pool', 'Name', 'simple', 'all')",
                "search.ismatchscoring('pool', 'Name', 'simple', 'all')",
            ),
            (
                "geo.distance(Location, geography'POINT(-122.131577 47.678581)') le 10",
                "geo.distance(Location, geography'POINT(-122.131577 47.678581)') le 10",
            ),
            (
                "geo.distance(geography'POINT(1 2)', Location) lt 2.5",
                "geo.distance(Location, geography'POINT(1.0 2.0)') lt 2.5",
            ),
            (
                "10 gt geo.distance(Location, geography'POINT(1 2)')",
                "geo.distance(Location, geography'POINT(1.0 2.0)') lt 10",
            ),
            (
                "geo.intersects(Location, geography'POLYGON((-122.031577 47.578581, -122.031577 47.678581, -122.131577 47.678581, -122.031577 47.578581))')",
                "geo.intersects(Location, geography'POLYGON((-122.031577 47.578581, -122.031577 47.678581, -122.131577 47.678581, -122.031577 47.578581))')",
            ),
            ("Tags/any(t: t eq 'wifi')", "Tags/any(t: t eq 'wifi')"),
            ("Tags/all(t: t ne 'smoking')", "Tags/all(t: t ne 'smoking')"),
            ("Tags/any()", "Tags/any()"),
            ("Tags/any(t: search.in(t, 'a,b'))", "Tags/any(t: search.in(t, 'a,b'))"),
            (
                "Rooms/any(room: room/Tags/any(tag: tag eq 'x') and room/Rate lt 100)",
                "Rooms/any(room: room/Tags/any(tag: tag eq 'x') and (room/Rate lt 100))",
            ),
            ("Address/City eq 'Oslo'", "Address/City eq 'Oslo'"),
            ("not search.in(city, 'a')", "not search.in(city, 'a')"),
            ("not Tags/any()", "not Tags/any()"),
        ];
        for (input, expected) in cases {
            assert_eq!(canonical(input), expected, "input {input:?}");
            let e = parse(input).unwrap();
            assert_eq!(parse(&e.to_string()).unwrap(), e, "round trip {input:?}");
        }
    }

    #[test]
    fn search_in_splits_on_its_delimiters() {
        let values = |input: &str| -> Vec<String> {
            match parse(input).unwrap() {
                Expr::SearchIn(s) => s.value_list().map(str::to_owned).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(values("search.in(f, 'a, b,c  d')"), ["a", "b", "c", "d"]);
        assert_eq!(values("search.in(f, 'a b|c', '|')"), ["a b", "c"]);
        assert_eq!(values("search.in(f, 'a;b|c', ';|')"), ["a", "b", "c"]);
    }

    #[test]
    fn errors_name_the_offending_position() {
        let cases = [
            ("", 0, "empty"),
            ("   ", 0, "empty"),
            ("x eq 1) or (true", 6, "unexpected ')'"),
            ("(x eq 1", 7, "expected ')'"),
            ("x eq 'abc", 5, "unterminated string"),
            ("x eq", 4, "end of filter"),
            ("x eq 1 and", 10, "end of filter"),
            ("x eq y", 5, "compare a field with a constant"),
            ("1 eq 1", 5, "compare a field with a constant"),
            ("'a' eq 'a'", 7, "compare a field with a constant"),
            ("x eq 1 eq 2", 7, "chained"),
            ("not Rating gt 5", 11, "binds tighter"),
            ("x EQ 1", 2, "unexpected 'EQ'"),
            ("x eq 1 AND y eq 2", 7, "unexpected 'AND'"),
            ("x eq 1 -- c", 7, "unexpected character '-'"),
            ("x eq 1 /* c */", 8, "'*'"),
            ("x eq 1;", 6, "unexpected character ';'"),
            ("x\u{a0}eq 1", 1, "U+00A0"),
            ("é eq 1", 0, "U+00E9"),
            ("x eq 5abc", 5, "malformed number"),
            ("x eq 1.", 5, "malformed number"),
            ("x eq .5", 5, "unexpected character '.'"),
            ("x eq 99999999999999999999", 5, "out of range"),
            ("x eq 1e999", 5, "out of range"),
            ("x eq 2024-13-01T00:00:00Z", 5, "date-time"),
            ("x eq 2024-01-01", 5, "date-time"),
            ("x eq 2024-01-01T00:00:00", 5, "date-time"),
            ("search.foo(x)", 0, "unknown function"),
            ("search.in(x)", 11, "expected ','"),
            ("search.in(x, 'a', '')", 18, "must not be empty"),
            ("search.in(x, y)", 13, "string literal"),
            ("search.ismatch('a', 'b', 'fuzzy', 'any')", 25, "queryType"),
            ("search.ismatch('a', 'b', 'full')", 31, "expected ','"),
            ("Tags/all()", 9, "a field name"),
            ("Tags/any(t: x eq 1)", 12, "only range variables"),
            ("Tags/any(t: t/any(t: t eq 1))", 18, "already in scope"),
            ("Tags/any(t: search.ismatch('a'))", 12, "inside a lambda"),
            (
                "geo.distance(loc, geography'POINT(1 2)')",
                0,
                "compared with a number",
            ),
            (
                "geo.distance(loc, geography'POINT(1 2)') eq 'x'",
                41,
                "compared with a number",
            ),
            (
                "geo.distance(loc, geography'POINT(200 2)') lt 1",
                28,
                "out of range",
            ),
            (
                "geo.intersects(loc, geography'POLYGON((0 0, 1 1, 0 0))')",
                30,
                "at least 4 points",
            ),
            ("geo.intersects(loc, geography'POINT(0 0)')", 20, "POLYGON"),
            ("x eq geography'POINT(0 0)'", 5, "only allowed inside"),
            ("x eq datetimeoffset'2024'", 5, "typed literal"),
            ("x eq'a'", 2, "typed literal"),
            ("5", 0, "not a boolean"),
            ("'true'", 0, "not a boolean"),
            ("null", 0, "not a boolean"),
            ("x eq null or", 12, "end of filter"),
            ("and eq 1", 0, "unexpected 'and'"),
            ("x/y/", 4, "a field name"),
            ("x.y eq 1", 1, "'.'"),
        ];
        for (input, position, needle) in cases {
            let err = parse(input).expect_err(input);
            assert_eq!(err.position, position, "position for {input:?}: {err}");
            assert!(
                err.message.contains(needle),
                "{input:?}: {err} lacks {needle:?}"
            );
            assert!(err.to_string().starts_with("Invalid expression: "));
            assert!(err
                .to_string()
                .ends_with(&format!("at position {position}")));
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let err = parse("x eq 'ééé' or 1").unwrap_err();
        assert_eq!(err.position, 14);
    }

    #[test]
    fn limits_stop_hostile_sizes_and_depths() {
        let parens = |n: usize| format!("{}x{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(
            parse(&parens(MAX_NESTING)).unwrap(),
            Expr::Path(Path::field("x").unwrap())
        );
        let err = parse(&parens(MAX_NESTING + 1)).unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        assert_eq!(err.position, MAX_NESTING);
        let nots = |n: usize| format!("{}x", "not ".repeat(n));
        assert_eq!(parse(&nots(MAX_DEPTH - 1)).unwrap().depth(), MAX_DEPTH);
        let err = parse(&nots(MAX_DEPTH)).unwrap_err();
        assert!(err.message.contains("nested"), "{err}");
        assert_eq!(err.position, 4 * (MAX_DEPTH - 1));
        assert!(parse(&"(".repeat(1_000_000)).is_err());
        let long = format!("x eq '{}'", "a".repeat(MAX_INPUT_LEN));
        assert!(parse(&long).unwrap_err().message.contains("longer"));
        // A long flat chain is fine and stays shallow.
        let chain = vec!["a eq 1"; 2000].join(" or ");
        let Expr::Or(items) = parse(&chain).unwrap() else {
            panic!()
        };
        assert_eq!(items.len(), 2000);
    }

    #[test]
    fn deepest_filters_parse_print_and_evaluate_within_a_tokio_worker_stack() {
        let mut deep = String::from("x eq 1");
        for _ in 0..MAX_DEPTH / 2 - 1 {
            deep = format!("not ({deep} or y)");
        }
        deep = format!("not ({deep})");
        let n = MAX_DEPTH - 1;
        let mut lambdas = format!("v{} eq 1", n - 1);
        for i in (0..n).rev() {
            let coll = if i == 0 {
                "c".to_owned()
            } else {
                format!("v{}/c", i - 1)
            };
            lambdas = format!("{coll}/any(v{i}: {lambdas})");
        }
        let cases = [
            deep,
            lambdas,
            format!("{}x{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING)),
        ];
        let run = move || {
            for s in &cases {
                let e = parse(s).unwrap_or_else(|err| panic!("{err}"));
                assert!(e.depth() <= MAX_DEPTH);
                let text = e.to_string();
                assert_eq!(parse(&text).unwrap(), e);
                crate::evaluate(&e, &serde_json::Map::new());
            }
        };
        // Half of a tokio worker's default stack.
        let handle = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(run)
            .unwrap();
        assert!(handle.join().is_ok());
    }

    #[test]
    fn keywords_are_case_sensitive_and_reserved() {
        assert_eq!(canonical("True"), "True");
        assert_eq!(canonical("nan eq 1"), "nan eq 1");
        assert!(parse("not eq 1").is_err());
        assert!(parse("Tags/any eq 1").is_err());
        assert!(parse("x eq True").is_err());
        assert!(parse("x eq Null").is_err());
    }

    #[test]
    fn field_paths_resolve_range_variables_and_full_text_fields() {
        let e = parse(
            "Rooms/any(r: r/Rate lt 5 and r/Tags/any(t: t eq 'x')) and search.ismatch('a', 'Name, Address/City') and tenant eq 'a'",
        )
        .unwrap();
        let refs: Vec<(String, FieldUse)> = e
            .field_paths()
            .into_iter()
            .map(|r| (r.path, r.usage))
            .collect();
        let expected = [
            ("Rooms", FieldUse::Filter),
            ("Rooms/Rate", FieldUse::Filter),
            ("Rooms/Tags", FieldUse::Filter),
            ("Rooms/Tags", FieldUse::Filter),
            ("Name", FieldUse::FullText),
            ("Address/City", FieldUse::FullText),
            ("tenant", FieldUse::Filter),
        ];
        let expected: Vec<(String, FieldUse)> = expected
            .iter()
            .map(|(p, u)| ((*p).to_owned(), *u))
            .collect();
        assert_eq!(refs, expected);
        let positions: Vec<usize> = parse("a eq 1 or  b eq 2")
            .unwrap()
            .field_paths()
            .iter()
            .map(|r| r.position)
            .collect();
        assert_eq!(positions, [0, 11]);
    }

    #[test]
    fn a_range_variable_named_like_a_field_shadows_it() {
        let e = parse("Tags/any(tenant: tenant eq 'x')").unwrap();
        let paths: Vec<String> = e.field_paths().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["Tags", "Tags"]);
    }

    #[test]
    fn builders_produce_text_that_parses_back() {
        let tenant =
            Expr::any_in(Path::field("tenantIds").unwrap(), &["a,b", "c d", "e|f"]).unwrap();
        let text = tenant.to_string();
        assert_eq!(text, "tenantIds/any(t: search.in(t, 'a,b;c d;e|f', ';'))");
        assert_eq!(parse(&text).unwrap(), tenant);
        let eq = Expr::compare(
            Path::field("tenantId").unwrap(),
            CompareOp::Eq,
            Literal::String("o'brien) or (true".into()),
        );
        assert_eq!(eq.to_string(), "tenantId eq 'o''brien) or (true'");
        assert_eq!(parse(&eq.to_string()).unwrap(), eq);
        assert!(Path::field("a) or (true").is_err());
        assert!(Path::field("and").is_err());
        assert!(Path::field("").is_err());
        assert!(Ident::new("t t").is_err());
        assert!(Expr::search_in(Path::field("x").unwrap(), &[]).is_err());
        assert!(Expr::search_in(Path::field("x").unwrap(), &[""]).is_err());
    }

    #[test]
    fn walk_visits_every_node() {
        let e = parse("a and not (b or Tags/any(t: search.ismatchscoring('x') eq true))");
        assert!(e.is_err(), "ismatch inside lambda is rejected");
        let e =
            parse("a and not (b or Tags/any(t: t eq 'x')) and search.ismatchscoring('x')").unwrap();
        let mut count = 0;
        let mut scoring = 0;
        e.walk(&mut |node| {
            count += 1;
            if matches!(node, Expr::IsMatch(m) if m.scoring) {
                scoring += 1;
            }
        });
        assert_eq!(count, 8);
        assert_eq!(scoring, 1);
    }
}
