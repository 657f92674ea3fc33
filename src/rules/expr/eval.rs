//! Evaluating a compiled condition against one event's [`Scope`]: no allocation, CEL's
//! commutative error handling for `&&` and `||`.

use super::{Arith, ArithOp, Cmp, CmpOp, EvalError, FieldValue, Node, Scope, StrFn, StrOp, Val};

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
