//! Rule conditions: CEL (Common Expression Language) parsed by the `cel` crate, then
//! compiled once, at load, into a small tree over slots: event fields the decoder extracts,
//! enrichment values by index, the score and named lists. Evaluation allocates nothing.
//!
//! Supported CEL: literals (numbers, strings, booleans, null), `&&` `||` `!`, comparisons,
//! `+ - * / %`, unary `-`, `c ? a : b`, `x in [..]`, `x in lists.NAME`, `has(event.x)`,
//! `s.startsWith(t)`, `s.endsWith(t)`, `s.contains(t)`, `size(s)`. Numbers are doubles
//! (`1 == 1.0`). Names:
//!
//! - `score`: the model's score;
//! - `event.a.b`: a field of the event (dotted path);
//! - `features.ENTITY.NAME`: an online feature (`feature:ENTITY.NAME` in the manifest);
//! - `windows.ENTITY["10m"].count` (or `.sum .avg .min .max .distinct`),
//!   `windows.ENTITY.since_last_s`: window aggregates (before the current event);
//! - `sessions.ENTITY.events` (or `.duration_s .since_start_s .distinct`): the entity's
//!   session before the current event;
//! - `scores.CLASS`: a multi-output model's score of that class;
//! - `lists.NAME`: a named list, only on the right of `in`.
//!
//! A value that is absent (missing field, no previous event, missing feature) is `null`.
//! Comparing or computing with `null` (other than `== null` / `!= null`) is an evaluation
//! error: the rule does not fire and the error is counted.

use std::collections::HashSet;
use std::sync::Arc;

mod compile;
mod eval;
#[cfg(test)]
mod tests;

pub use compile::{compile, CompileError};

/// A value during evaluation; strings borrow from the event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// Absent.
    Null,
    /// Any number (CEL int, uint and double).
    Num(f64),
    /// A string.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
}

pub use crate::core::field::FieldValue;

impl FieldValue {
    /// As an evaluation value.
    pub fn as_val(&self) -> Val<'_> {
        match self {
            FieldValue::Null => Val::Null,
            FieldValue::Num(n) => Val::Num(*n),
            FieldValue::Str(s) => Val::Str(s),
            FieldValue::Bool(b) => Val::Bool(*b),
        }
    }
}

/// Prefix of a multi-output model's class scores among the names rules can read (after the
/// enrichment names): `scores.sports` reads `score:sports`.
pub const CLASS_SCORE: &str = "score:";

/// What a condition reads for one event.
pub struct Scope<'a> {
    /// The model score.
    pub score: f64,
    /// Event fields, by slot ([`Names::event_paths`] order).
    pub fields: &'a [FieldValue],
    /// Enrichment values, in the enricher's name order (None = absent).
    pub enriched: &'a [Option<f64>],
    /// Named lists, by index ([`Names::lists`] order).
    pub lists: &'a [Arc<HashSet<String>>],
}

/// Why an expression did not evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalError;

/// Names a rule set may use, and the slots they compile to.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Event paths referenced so far (slot = index).
    pub event_paths: Vec<String>,
    /// Enrichment names available (`window:…`, `feature:…`).
    pub enriched: Vec<String>,
    /// Named lists available.
    pub lists: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
enum Const {
    Null,
    Num(f64),
    Str(Box<str>),
    Bool(bool),
}

impl Const {
    fn val(&self) -> Val<'_> {
        match self {
            Const::Null => Val::Null,
            Const::Num(n) => Val::Num(*n),
            Const::Str(s) => Val::Str(s),
            Const::Bool(b) => Val::Bool(*b),
        }
    }
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum Node {
    /// A literal.
    Const(ConstVal),
    /// `score`.
    Score,
    /// An event field slot.
    Field(usize),
    /// An enrichment value index.
    Enriched(usize),
    /// `!x`.
    Not(Box<Node>),
    /// `-x`.
    Neg(Box<Node>),
    /// `a && b`.
    And(Box<Node>, Box<Node>),
    /// `a || b`.
    Or(Box<Node>, Box<Node>),
    /// Comparison.
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// Arithmetic.
    Arith(ArithOp, Box<Node>, Box<Node>),
    /// `c ? a : b`.
    Cond(Box<Node>, Box<Node>, Box<Node>),
    /// `x in lists.NAME`.
    InList(Box<Node>, usize),
    /// `x in ["a", 1, ...]`.
    InLiteral(Box<Node>, Box<[ConstVal]>),
    /// String predicate.
    Str(StrFn, Box<Node>, Box<Node>),
    /// `size(s)`.
    Size(Box<Node>),
    /// `has(x)`: x is present.
    Has(Box<Node>),
    /// `x < k` (any ordering) with x a name and k a number: the commonest predicate,
    /// evaluated without building intermediate values.
    CmpK(CmpOp, Src, f64),
    /// `x == 's'` / `x != 's'` with x a name.
    EqStr(Src, Box<str>, bool),
    /// `x == null` / `x != null` with x a name.
    EqNull(Src, bool),
}

/// Where a name's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// `score`.
    Score,
    /// An event field slot.
    Field(usize),
    /// An enrichment value index.
    Enriched(usize),
}

impl Src {
    fn of(n: &Node) -> Option<Src> {
        match n {
            Node::Score => Some(Src::Score),
            Node::Field(i) => Some(Src::Field(*i)),
            Node::Enriched(i) => Some(Src::Enriched(*i)),
            _ => None,
        }
    }

    #[inline]
    fn get<'s>(self, s: &Scope<'s>) -> Val<'s> {
        match self {
            Src::Score if s.score.is_nan() => Val::Null,
            Src::Score => Val::Num(s.score),
            Src::Field(i) => s.fields.get(i).map(FieldValue::as_val).unwrap_or(Val::Null),
            Src::Enriched(i) => s.enriched.get(i).copied().flatten().map(Val::Num).unwrap_or(Val::Null),
        }
    }
}

/// A literal (opaque).
#[derive(Debug, Clone, PartialEq)]
pub struct ConstVal(Const);
/// A comparison operator (opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmpOp(Cmp);
/// An arithmetic operator (opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArithOp(Arith);
/// A string function (opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrFn(StrOp);
