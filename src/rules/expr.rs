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
//! - `lists.NAME`: a named list, only on the right of `in`.
//!
//! A value that is absent (missing field, no previous event, missing feature) is `null`.
//! Comparing or computing with `null` (other than `== null` / `!= null`) is an evaluation
//! error: the rule does not fire and the error is counted.

use std::collections::HashSet;
use std::sync::Arc;

use cel::common::ast::{operators as op, Expr, LiteralValue};
use cel::IdedExpr;

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

fn num(v: Val<'_>) -> Result<f64, EvalError> {
    match v {
        Val::Num(n) => Ok(n),
        _ => Err(EvalError),
    }
}

fn boolean(v: Val<'_>) -> Result<bool, EvalError> {
    match v {
        Val::Bool(b) => Ok(b),
        _ => Err(EvalError),
    }
}

fn equal(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Null, Val::Null) => true,
        _ => false,
    }
}

/// Integer-valued numbers as list keys: `123.0` looks up "123".
fn list_key(v: Val<'_>, f: impl FnOnce(&str) -> bool) -> Result<bool, EvalError> {
    match v {
        Val::Str(s) => Ok(f(s)),
        Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => Ok(f(&(n as i64).to_string())),
        Val::Num(n) => Ok(f(&n.to_string())),
        Val::Null => Ok(false),
        Val::Bool(_) => Err(EvalError),
    }
}

impl Node {
    /// Evaluates against one event.
    pub fn eval<'s>(&'s self, s: &Scope<'s>) -> Result<Val<'s>, EvalError> {
        Ok(match self {
            Node::Const(c) => c.0.val(),
            // No score (deadline fallback): null, like any absent value.
            Node::Score if s.score.is_nan() => Val::Null,
            Node::Score => Val::Num(s.score),
            Node::Field(i) => s.fields.get(*i).map(FieldValue::as_val).unwrap_or(Val::Null),
            Node::Enriched(i) => s.enriched.get(*i).copied().flatten().map(Val::Num).unwrap_or(Val::Null),
            Node::Not(a) => Val::Bool(!boolean(a.eval(s)?)?),
            Node::Neg(a) => Val::Num(-num(a.eval(s)?)?),
            Node::And(a, b) => {
                // CEL's commutative error handling: false wins over an error on either side.
                match a.eval(s).and_then(boolean) {
                    Ok(false) => Val::Bool(false),
                    Ok(true) => Val::Bool(boolean(b.eval(s)?)?),
                    Err(e) => match b.eval(s).and_then(boolean) {
                        Ok(false) => Val::Bool(false),
                        _ => return Err(e),
                    },
                }
            }
            Node::Or(a, b) => match a.eval(s).and_then(boolean) {
                Ok(true) => Val::Bool(true),
                Ok(false) => Val::Bool(boolean(b.eval(s)?)?),
                Err(e) => match b.eval(s).and_then(boolean) {
                    Ok(true) => Val::Bool(true),
                    _ => return Err(e),
                },
            },
            Node::Cmp(CmpOp(c), a, b) => {
                let (x, y) = (a.eval(s)?, b.eval(s)?);
                Val::Bool(match c {
                    Cmp::Eq => equal(x, y),
                    Cmp::Ne => !equal(x, y),
                    _ => {
                        let ord = match (x, y) {
                            (Val::Num(p), Val::Num(q)) => p.partial_cmp(&q).ok_or(EvalError)?,
                            (Val::Str(p), Val::Str(q)) => p.cmp(q),
                            _ => return Err(EvalError),
                        };
                        match c {
                            Cmp::Lt => ord.is_lt(),
                            Cmp::Le => ord.is_le(),
                            Cmp::Gt => ord.is_gt(),
                            _ => ord.is_ge(),
                        }
                    }
                })
            }
            Node::Arith(ArithOp(o), a, b) => {
                let (x, y) = (num(a.eval(s)?)?, num(b.eval(s)?)?);
                let r = match o {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                    Arith::Rem => x % y,
                };
                if !r.is_finite() {
                    return Err(EvalError);
                }
                Val::Num(r)
            }
            Node::Cond(c, a, b) => {
                if boolean(c.eval(s)?)? {
                    a.eval(s)?
                } else {
                    b.eval(s)?
                }
            }
            Node::InList(x, l) => {
                let set = &s.lists[*l];
                Val::Bool(list_key(x.eval(s)?, |k| set.contains(k))?)
            }
            Node::InLiteral(x, items) => {
                let v = x.eval(s)?;
                Val::Bool(items.iter().any(|c| equal(v, c.0.val())))
            }
            Node::Str(StrFn(f), a, b) => {
                let (Val::Str(x), Val::Str(y)) = (a.eval(s)?, b.eval(s)?) else { return Err(EvalError) };
                Val::Bool(match f {
                    StrOp::StartsWith => x.starts_with(y),
                    StrOp::EndsWith => x.ends_with(y),
                    StrOp::Contains => x.contains(y),
                })
            }
            Node::Size(a) => match a.eval(s)? {
                Val::Str(x) => Val::Num(x.chars().count() as f64),
                _ => return Err(EvalError),
            },
            Node::Has(a) => Val::Bool(!matches!(a.eval(s)?, Val::Null)),
            Node::CmpK(CmpOp(c), x, k) => {
                let Val::Num(v) = x.get(s) else { return Err(EvalError) };
                Val::Bool(match c {
                    Cmp::Lt => v < *k,
                    Cmp::Le => v <= *k,
                    Cmp::Gt => v > *k,
                    Cmp::Ge => v >= *k,
                    Cmp::Eq => v == *k,
                    Cmp::Ne => v != *k,
                })
            }
            Node::EqStr(x, k, eq) => Val::Bool((x.get(s) == Val::Str(k)) == *eq),
            Node::EqNull(x, eq) => Val::Bool(matches!(x.get(s), Val::Null) == *eq),
        })
    }

    /// Evaluates a condition: true only for a boolean `true`.
    pub fn test(&self, s: &Scope<'_>) -> Result<bool, EvalError> {
        boolean(self.eval(s)?)
    }
}

/// Parses and compiles `src`; errors name the unknown name or unsupported construct.
pub fn compile(src: &str, names: &mut Names) -> Result<Node, String> {
    let ast = cel::parser::Parser::new().parse(src).map_err(|e| format!("syntax: {e}"))?;
    let node = Compiler { names }.node(&ast)?;
    Ok(fold(node))
}

struct Compiler<'n> {
    names: &'n mut Names,
}

/// A path `root.a["b"].c` as segments, if `e` is one.
fn path(e: &IdedExpr, out: &mut Vec<String>) -> bool {
    match &e.expr {
        Expr::Ident(name) => {
            out.push(name.clone());
            true
        }
        Expr::Select(sel) if !sel.test => {
            if !path(&sel.operand, out) {
                return false;
            }
            out.push(sel.field.clone());
            true
        }
        Expr::Call(c) if c.func_name == op::INDEX && c.args.len() == 2 => {
            let Expr::Literal(LiteralValue::String(key)) = &c.args[1].expr else { return false };
            if !path(&c.args[0], out) {
                return false;
            }
            out.push(key.to_string());
            true
        }
        _ => false,
    }
}

fn b(n: Node) -> Box<Node> {
    Box::new(n)
}

impl Compiler<'_> {
    fn node(&mut self, e: &IdedExpr) -> Result<Node, String> {
        let mut segs = Vec::new();
        if path(e, &mut segs) {
            return self.name(&segs);
        }
        match &e.expr {
            Expr::Literal(l) => Ok(Node::Const(ConstVal(literal(l)?))),
            Expr::Select(sel) if sel.test => {
                // has(a.b): the cel parser expands the macro into a test-only select.
                let mut segs = Vec::new();
                if !path(&sel.operand, &mut segs) {
                    return Err("has() takes a field path".into());
                }
                segs.push(sel.field.clone());
                Ok(Node::Has(b(self.name(&segs)?)))
            }
            Expr::Call(c) => self.call(&c.func_name, c.target.as_deref(), &c.args),
            Expr::List(_) => Err("a list literal is only allowed on the right of `in`".into()),
            Expr::Map(_) | Expr::Struct(_) => Err("maps and messages are not supported".into()),
            Expr::Comprehension(_) => Err("macros (all, exists, map, filter) are not supported".into()),
            _ => Err("unsupported expression".into()),
        }
    }

    fn name(&mut self, segs: &[String]) -> Result<Node, String> {
        let joined = segs.join(".");
        match segs[0].as_str() {
            "score" if segs.len() == 1 => Ok(Node::Score),
            "event" if segs.len() > 1 => {
                let p = segs[1..].join(".");
                let slot = match self.names.event_paths.iter().position(|x| *x == p) {
                    Some(i) => i,
                    None => {
                        self.names.event_paths.push(p);
                        self.names.event_paths.len() - 1
                    }
                };
                Ok(Node::Field(slot))
            }
            "features" if segs.len() == 3 => self.enriched(format!("feature:{}.{}", segs[1], segs[2]), "feature"),
            "windows" if segs.len() == 3 || segs.len() == 4 => {
                self.enriched(format!("window:{}", segs[1..].join(".")), "window aggregate")
            }
            "lists" => Err(format!("list '{joined}' can only be used on the right of `in`")),
            _ => Err(format!(
                "unknown name '{joined}' (use score, event.<path>, features.<entity>.<name>, \
                 windows.<entity>[\"<window>\"].<agg>, windows.<entity>.since_last_s, lists.<name>)"
            )),
        }
    }

    fn enriched(&mut self, name: String, what: &str) -> Result<Node, String> {
        match self.names.enriched.iter().position(|x| *x == name) {
            Some(i) => Ok(Node::Enriched(i)),
            None => Err(format!("unknown {what} '{}'", name.split_once(':').map(|(_, n)| n).unwrap_or(&name))),
        }
    }

    fn call(&mut self, f: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> Result<Node, String> {
        let two = |c: &mut Self| -> Result<(Node, Node), String> {
            match args {
                [x, y] => Ok((c.node(x)?, c.node(y)?)),
                _ => Err(format!("{f} takes two operands")),
            }
        };
        let cmp = |c: &mut Self, k| two(c).map(|(x, y)| Node::Cmp(CmpOp(k), b(x), b(y)));
        let arith = |c: &mut Self, k| two(c).map(|(x, y)| Node::Arith(ArithOp(k), b(x), b(y)));
        match (f, target) {
            (op::LOGICAL_AND, None) => two(self).map(|(x, y)| Node::And(b(x), b(y))),
            (op::LOGICAL_OR, None) => two(self).map(|(x, y)| Node::Or(b(x), b(y))),
            (op::LOGICAL_NOT, None) if args.len() == 1 => Ok(Node::Not(b(self.node(&args[0])?))),
            (op::NEGATE, None) if args.len() == 1 => Ok(Node::Neg(b(self.node(&args[0])?))),
            (op::EQUALS, None) => cmp(self, Cmp::Eq),
            (op::NOT_EQUALS, None) => cmp(self, Cmp::Ne),
            (op::LESS, None) => cmp(self, Cmp::Lt),
            (op::LESS_EQUALS, None) => cmp(self, Cmp::Le),
            (op::GREATER, None) => cmp(self, Cmp::Gt),
            (op::GREATER_EQUALS, None) => cmp(self, Cmp::Ge),
            (op::ADD, None) => arith(self, Arith::Add),
            (op::SUBSTRACT, None) => arith(self, Arith::Sub),
            (op::MULTIPLY, None) => arith(self, Arith::Mul),
            (op::DIVIDE, None) => arith(self, Arith::Div),
            (op::MODULO, None) => arith(self, Arith::Rem),
            (op::CONDITIONAL, None) if args.len() == 3 => {
                Ok(Node::Cond(b(self.node(&args[0])?), b(self.node(&args[1])?), b(self.node(&args[2])?)))
            }
            (op::IN, None) if args.len() == 2 => self.in_(&args[0], &args[1]),
            ("startsWith" | "endsWith" | "contains", Some(t)) if args.len() == 1 => {
                let k = match f {
                    "startsWith" => StrOp::StartsWith,
                    "endsWith" => StrOp::EndsWith,
                    _ => StrOp::Contains,
                };
                Ok(Node::Str(StrFn(k), b(self.node(t)?), b(self.node(&args[0])?)))
            }
            ("size", Some(t)) if args.is_empty() => Ok(Node::Size(b(self.node(t)?))),
            ("size", None) if args.len() == 1 => Ok(Node::Size(b(self.node(&args[0])?))),
            _ => Err(format!("unsupported function or operator '{}'", f.trim_matches(|c| c == '_' || c == '@'))),
        }
    }

    fn in_(&mut self, x: &IdedExpr, coll: &IdedExpr) -> Result<Node, String> {
        let x = self.node(x)?;
        if let Expr::List(l) = &coll.expr {
            let items = l
                .elements
                .iter()
                .map(|e| match &e.expr {
                    Expr::Literal(lit) => literal(lit).map(ConstVal),
                    _ => Err("list literal elements must be literals".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Node::InLiteral(b(x), items.into()));
        }
        let mut segs = Vec::new();
        if path(coll, &mut segs) && segs.len() == 2 && segs[0] == "lists" {
            return match self.names.lists.iter().position(|n| *n == segs[1]) {
                Some(i) => Ok(Node::InList(b(x), i)),
                None => Err(format!("unknown list '{}'", segs[1])),
            };
        }
        Err("`in` takes a list literal or lists.<name> on its right".into())
    }
}

fn literal(l: &LiteralValue) -> Result<Const, String> {
    Ok(match l {
        LiteralValue::Boolean(v) => Const::Bool(**v),
        LiteralValue::Int(v) => Const::Num(**v as f64),
        LiteralValue::UInt(v) => Const::Num(**v as f64),
        LiteralValue::Double(v) => Const::Num(**v),
        LiteralValue::String(v) => Const::Str(v.to_string().into()),
        LiteralValue::Null => Const::Null,
        LiteralValue::Bytes(_) => return Err("bytes literals are not supported".into()),
    })
}

/// Folds constant sub-expressions (`1000 * 5` → `5000`) once, at load.
fn fold(n: Node) -> Node {
    let scope = Scope { score: 0.0, fields: &[], enriched: &[], lists: &[] };
    let constant = |n: &Node| matches!(n, Node::Const(_));
    let n = match n {
        Node::Not(a) => Node::Not(b(fold(*a))),
        Node::Neg(a) => Node::Neg(b(fold(*a))),
        Node::And(x, y) => Node::And(b(fold(*x)), b(fold(*y))),
        Node::Or(x, y) => Node::Or(b(fold(*x)), b(fold(*y))),
        Node::Cmp(o, x, y) => Node::Cmp(o, b(fold(*x)), b(fold(*y))),
        Node::Arith(o, x, y) => Node::Arith(o, b(fold(*x)), b(fold(*y))),
        Node::Cond(c, x, y) => Node::Cond(b(fold(*c)), b(fold(*x)), b(fold(*y))),
        other => other,
    };
    let all_const = match &n {
        Node::Not(a) | Node::Neg(a) => constant(a),
        Node::Cmp(_, x, y) | Node::Arith(_, x, y) => constant(x) && constant(y),
        _ => false,
    };
    if let Node::Cmp(CmpOp(c), x, y) = &n {
        let ordering = !matches!(c, Cmp::Eq | Cmp::Ne);
        let flip = |c: Cmp| match c {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            other => other,
        };
        match (Src::of(x), &**y, &**x, Src::of(y)) {
            (Some(src), Node::Const(ConstVal(Const::Num(k))), _, _) if ordering && !k.is_nan() => {
                return Node::CmpK(CmpOp(*c), src, *k)
            }
            (_, _, Node::Const(ConstVal(Const::Num(k))), Some(src)) if ordering && !k.is_nan() => {
                return Node::CmpK(CmpOp(flip(*c)), src, *k)
            }
            (Some(src), Node::Const(ConstVal(Const::Str(k))), _, _) if !ordering => {
                return Node::EqStr(src, k.clone(), *c == Cmp::Eq)
            }
            (Some(src), Node::Const(ConstVal(Const::Null)), _, _) if !ordering => {
                return Node::EqNull(src, *c == Cmp::Eq)
            }
            _ => {}
        }
    }
    if all_const {
        if let Ok(v) = n.eval(&scope) {
            let c = match v {
                Val::Null => Const::Null,
                Val::Num(x) => Const::Num(x),
                Val::Str(x) => Const::Str(x.into()),
                Val::Bool(x) => Const::Bool(x),
            };
            return Node::Const(ConstVal(c));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            event_paths: vec![],
            enriched: vec!["window:card.10m.count".into(), "feature:card.chargebacks_90d".into()],
            lists: vec!["deny".into()],
        }
    }

    fn eval(src: &str, fields: &[(&str, FieldValue)], score: f64) -> Result<FieldValue, EvalError> {
        let mut n = names();
        let node = compile(src, &mut n).unwrap_or_else(|e| panic!("{src}: {e}"));
        let mut values = vec![FieldValue::Null; n.event_paths.len()];
        for (p, v) in fields {
            if let Some(i) = n.event_paths.iter().position(|x| x == p) {
                values[i] = v.clone();
            }
        }
        let deny: Arc<HashSet<String>> = Arc::new(["c-1".to_string(), "42".to_string()].into_iter().collect());
        let lists = [deny];
        let enriched = [Some(7.0), None];
        let scope = Scope { score, fields: &values, enriched: &enriched, lists: &lists };
        node.eval(&scope).map(|v| match v {
            Val::Null => FieldValue::Null,
            Val::Num(x) => FieldValue::Num(x),
            Val::Str(x) => FieldValue::Str(x.to_string()),
            Val::Bool(x) => FieldValue::Bool(x),
        })
    }

    fn t(src: &str) -> bool {
        let f = [
            ("amount", FieldValue::Num(1500.0)),
            ("country", FieldValue::Str("NG".into())),
            ("card_id", FieldValue::Str("c-1".into())),
            ("card.bin", FieldValue::Num(42.0)),
            ("email", FieldValue::Str("x@mailinator.com".into())),
            ("is_3ds", FieldValue::Bool(false)),
        ];
        match eval(src, &f, 0.7) {
            Ok(FieldValue::Bool(b)) => b,
            other => panic!("{src}: {other:?}"),
        }
    }

    #[test]
    fn every_operator() {
        assert!(t("event.amount > 1000"));
        assert!(t("event.amount >= 1500.0"));
        assert!(t("event.amount < 2000 && event.amount <= 1500"));
        assert!(t("event.amount == 1500 && event.amount != 1"));
        assert!(t("event.amount + 500 == 2000 && event.amount - 500 == 1000"));
        assert!(t("event.amount * 2 == 3000 && event.amount / 3 == 500 && event.amount % 7 == 2"));
        assert!(t("-event.amount < 0"));
        assert!(t("!(event.amount < 10)"));
        assert!(t("event.amount < 10 || score > 0.5"));
        assert!(t("(score > 0.5 ? 1 : 2) == 1"));
        assert!(t("event.country in ['NG', 'RU']"));
        assert!(!t("event.country in ['US']"));
        assert!(t("event.card_id in lists.deny"));
        assert!(t("event.card.bin in lists.deny"), "integer-valued numbers look up as integers");
        assert!(t(
            "event.email.endsWith('@mailinator.com') && event.email.startsWith('x') && event.email.contains('@')"
        ));
        assert!(t("size(event.country) == 2 && event.country.size() == 2"));
        assert!(t("has(event.amount) && !has(event.nope)"));
        assert!(t("event.nope == null && event.amount != null"));
        assert!(t("event.is_3ds == false"));
        assert!(t("event.country > 'A'"));
        assert!(t("windows.card['10m'].count == 7.0"));
        assert!(t("features.card.chargebacks_90d == null"));
    }

    #[test]
    fn absent_values_are_errors_in_arithmetic_and_ordering_but_false_and_short_circuits() {
        assert_eq!(eval("event.nope > 1", &[], 0.0), Err(EvalError));
        assert_eq!(eval("features.card.chargebacks_90d + 1 > 0", &[], 0.0), Err(EvalError));
        assert_eq!(eval("event.nope > 1 && false", &[], 0.0), Ok(FieldValue::Bool(false)));
        assert_eq!(eval("event.nope > 1 || true", &[], 0.0), Ok(FieldValue::Bool(true)));
        assert_eq!(eval("'a' < 1", &[], 0.0), Err(EvalError));
        assert_eq!(eval("1 / 0 > 0", &[], 0.0), Err(EvalError), "non-finite arithmetic is an error");
    }

    #[test]
    fn unknown_names_are_rejected_with_the_name() {
        let mut n = names();
        for (src, needle) in [
            ("features.card.nope > 1", "unknown feature 'card.nope'"),
            ("windows.card['5m'].count > 1", "unknown window aggregate 'card.5m.count'"),
            ("event.x in lists.allow", "unknown list 'allow'"),
            ("amount > 1", "unknown name 'amount'"),
            ("lists.deny", "only be used on the right of `in`"),
            ("event.x.exists(y, y > 1)", "not supported"),
            ("event.x matches 'a'", "syntax"),
            ("timestamp(event.x) > 1", "unsupported function or operator 'timestamp'"),
        ] {
            let e = compile(src, &mut n).unwrap_err();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn constants_fold_at_load() {
        let mut n = names();
        let node = compile("event.amount > 1000 * 5", &mut n).unwrap();
        assert!(matches!(node, Node::CmpK(CmpOp(Cmp::Gt), Src::Field(0), k) if k == 5000.0), "{node:?}");
        let node = compile("5000 <= score", &mut n).unwrap();
        assert!(matches!(node, Node::CmpK(CmpOp(Cmp::Ge), Src::Score, k) if k == 5000.0), "{node:?}");
    }
}
