//! The Azure AI Search OData `$filter` language: a strict parser, a canonical serialiser and an
//! evaluator.
//!
//! Two users:
//! - the Azure emulator (`azure-sim`) parses `$filter` and evaluates it per document;
//! - the gateway's search router confines a tenant to its own documents by parsing the caller's
//!   filter into a tree, combining it with the tenant clause ([`Expr::and`]) and sending the
//!   serialised combination upstream. That is safe because parsing is strict (anything outside
//!   the grammar is a [`ParseError`], including non-ASCII outside strings, comments and
//!   unbalanced parentheses) and serialisation parenthesises every compound operand and quotes
//!   every string, so no caller text can change the shape of the combined tree.
//!
//! ```
//! use odata_filter::{evaluate, parse, Expr, Path};
//!
//! let caller = parse("Rating ge 4 or Tags/any(t: t eq 'pool')")?;
//! let tenant = Expr::any_in(Path::field("tenantIds")?, &["acme"])?;
//! let combined = caller.and(tenant);
//! assert_eq!(
//!     combined.to_string(),
//!     "((Rating ge 4) or Tags/any(t: t eq 'pool')) and tenantIds/any(t: search.in(t, 'acme'))"
//! );
//! assert_eq!(parse(&combined.to_string())?, combined);
//!
//! let doc = serde_json::json!({"Rating": 5, "tenantIds": ["globex"]});
//! assert!(!evaluate(&combined, doc.as_object().unwrap()));
//! # Ok::<(), odata_filter::ParseError>(())
//! ```

mod ast;
mod clauses;
mod display;
mod error;
mod eval;
mod lexer;
mod parser;

pub use ast::{
    CompareOp, Comparison, Expr, FieldRef, FieldUse, GeoDistance, GeoIntersects, GeoPoint, Ident,
    IsMatch, Lambda, LambdaBody, LambdaKind, Literal, Operand, Path, PathRoot, QueryType, SearchIn,
    SearchMode,
};
pub use clauses::{parse_order_by, parse_select, OrderBy, SortKey, MAX_ORDER_BY_CLAUSES};
pub use error::ParseError;
pub use eval::{evaluate, evaluate_with, FullText, NoFullText};
pub use parser::{parse, MAX_DEPTH, MAX_INPUT_LEN};
