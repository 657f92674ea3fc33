//! Compiling a CEL condition into the evaluation tree: names resolved to slots, constant
//! sub-expressions folded, and the commonest predicates (`name op number`, `name == 's'`,
//! `name == null`) fused into single nodes. Runs once per rule, at load.

use cel::common::ast::{operators as op, Expr, LiteralValue};
use cel::IdedExpr;

use super::{Arith, ArithOp, Cmp, CmpOp, Const, ConstVal, Names, Node, Scope, Src, StrFn, StrOp, Val, CLASS_SCORE};

/// Why a condition did not compile; the message names the unknown name or the unsupported
/// construct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The CEL parser rejected the text.
    #[error("syntax: {0}")]
    Syntax(String),
    /// `has()` around something other than a field path.
    #[error("has() takes a field path")]
    HasNeedsPath,
    /// `[...]` anywhere but on the right of `in`.
    #[error("a list literal is only allowed on the right of `in`")]
    ListLiteralOutsideIn,
    /// A map or message literal.
    #[error("maps and messages are not supported")]
    MapOrMessage,
    /// `all`, `exists`, `map`, `filter`.
    #[error("macros (all, exists, map, filter) are not supported")]
    Macro,
    /// Any other construct.
    #[error("unsupported expression")]
    Unsupported,
    /// `lists.NAME` anywhere but on the right of `in`.
    #[error("list '{0}' can only be used on the right of `in`")]
    ListOutsideIn(String),
    /// A name that is not score, event, features, windows or lists.
    #[error(
        "unknown name '{0}' (use score, event.<path>, features.<entity>.<name>, \
         windows.<entity>[\"<window>\"].<agg>, windows.<entity>.since_last_s, sessions.<entity>.<value>, \
         scores.<class>, lists.<name>)"
    )]
    UnknownName(String),
    /// A feature or window aggregate the enricher does not provide.
    #[error("unknown {what} '{name}'")]
    UnknownEnriched {
        /// "feature", "window aggregate", "session value" or "class score".
        what: &'static str,
        /// The name without its `feature:` / `window:` prefix.
        name: String,
    },
    /// A binary operator with another number of operands.
    #[error("{0} takes two operands")]
    TwoOperands(String),
    /// A function or operator outside the supported subset.
    #[error("unsupported function or operator '{0}'")]
    UnsupportedFunction(String),
    /// `x in [a, f(y)]`.
    #[error("list literal elements must be literals")]
    ListElementNotLiteral,
    /// `x in lists.NAME` with no such list.
    #[error("unknown list '{0}'")]
    UnknownList(String),
    /// `x in y` with y neither a list literal nor `lists.NAME`.
    #[error("`in` takes a list literal or lists.<name> on its right")]
    InNeedsList,
    /// `b"..."`.
    #[error("bytes literals are not supported")]
    Bytes,
}

/// Parses and compiles `src`; errors name the unknown name or unsupported construct.
pub fn compile(src: &str, names: &mut Names) -> Result<Node, CompileError> {
    let ast = cel::parser::Parser::new().parse(src).map_err(|e| CompileError::Syntax(e.to_string()))?;
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
    fn node(&mut self, e: &IdedExpr) -> Result<Node, CompileError> {
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
                    return Err(CompileError::HasNeedsPath);
                }
                segs.push(sel.field.clone());
                Ok(Node::Has(b(self.name(&segs)?)))
            }
            Expr::Call(c) => self.call(&c.func_name, c.target.as_deref(), &c.args),
            Expr::List(_) => Err(CompileError::ListLiteralOutsideIn),
            Expr::Map(_) | Expr::Struct(_) => Err(CompileError::MapOrMessage),
            Expr::Comprehension(_) => Err(CompileError::Macro),
            _ => Err(CompileError::Unsupported),
        }
    }

    fn name(&mut self, segs: &[String]) -> Result<Node, CompileError> {
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
            "scores" if segs.len() == 2 => self.enriched(format!("{CLASS_SCORE}{}", segs[1]), "class score"),
            "sessions" if segs.len() == 3 => self.enriched(format!("session:{}.{}", segs[1], segs[2]), "session value"),
            "lists" => Err(CompileError::ListOutsideIn(joined)),
            _ => Err(CompileError::UnknownName(joined)),
        }
    }

    fn enriched(&mut self, name: String, what: &'static str) -> Result<Node, CompileError> {
        match self.names.enriched.iter().position(|x| *x == name) {
            Some(i) => Ok(Node::Enriched(i)),
            None => Err(CompileError::UnknownEnriched {
                what,
                name: name.split_once(':').map(|(_, n)| n).unwrap_or(&name).to_string(),
            }),
        }
    }

    fn call(&mut self, f: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> Result<Node, CompileError> {
        let two = |c: &mut Self| -> Result<(Node, Node), CompileError> {
            match args {
                [x, y] => Ok((c.node(x)?, c.node(y)?)),
                _ => Err(CompileError::TwoOperands(f.to_string())),
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
            _ => Err(CompileError::UnsupportedFunction(f.trim_matches(|c| c == '_' || c == '@').to_string())),
        }
    }

    fn in_(&mut self, x: &IdedExpr, coll: &IdedExpr) -> Result<Node, CompileError> {
        let x = self.node(x)?;
        if let Expr::List(l) = &coll.expr {
            let items = l
                .elements
                .iter()
                .map(|e| match &e.expr {
                    Expr::Literal(lit) => literal(lit).map(ConstVal),
                    _ => Err(CompileError::ListElementNotLiteral),
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Node::InLiteral(b(x), items.into()));
        }
        let mut segs = Vec::new();
        if path(coll, &mut segs) && segs.len() == 2 && segs[0] == "lists" {
            return match self.names.lists.iter().position(|n| *n == segs[1]) {
                Some(i) => Ok(Node::InList(b(x), i)),
                None => Err(CompileError::UnknownList(segs[1].clone())),
            };
        }
        Err(CompileError::InNeedsList)
    }
}

fn literal(l: &LiteralValue) -> Result<Const, CompileError> {
    Ok(match l {
        LiteralValue::Boolean(v) => Const::Bool(**v),
        LiteralValue::Int(v) => Const::Num(**v as f64),
        LiteralValue::UInt(v) => Const::Num(**v as f64),
        LiteralValue::Double(v) => Const::Num(**v),
        LiteralValue::String(v) => Const::Str(v.to_string().into()),
        LiteralValue::Null => Const::Null,
        LiteralValue::Bytes(_) => return Err(CompileError::Bytes),
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
