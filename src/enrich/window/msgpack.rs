//! The entity state as `window.lua` keeps it in Redis: msgpack `{b, f, n, x}` (buckets,
//! fences, newest event, last expiry push), read back and written the same way.

use super::buckets::MinMax;
use super::{Bucket, EntityState, StateError};

impl EntityState {
    /// The state `window.lua` keeps in Redis (msgpack `{b, f, n}`: buckets, fences, newest);
    /// distinct values live in their own hash there, so none are loaded.
    pub fn from_msgpack(blob: &[u8]) -> Result<Self, StateError> {
        use rmpv::Value;
        let v = rmpv::decode::read_value(&mut &blob[..]).map_err(StateError::Decode)?;
        let Value::Map(top) = v else { return Err(StateError::NotAMap) };
        let num = |v: &Value| match v {
            Value::Integer(i) => i.as_f64(),
            Value::F32(f) => Some(f64::from(*f)),
            Value::F64(f) => Some(*f),
            _ => None,
        };
        let int = |v: &Value| v.as_i64().or_else(|| num(v).filter(|f| f.fract() == 0.0).map(|f| f as i64));
        let bad = StateError::Bad;
        let mut st = Self::default();
        for (k, v) in &top {
            match (k.as_str(), v) {
                (Some("b"), Value::Array(buckets)) => {
                    for b in buckets {
                        let Value::Array(f) = b else { return Err(bad("bucket")) };
                        if f.len() != 7 {
                            return Err(bad("bucket"));
                        }
                        let has = f[3].as_bool().ok_or_else(|| bad("bucket flag"))?;
                        let start = int(&f[0]).ok_or_else(|| bad("bucket start"))?;
                        let m = match has {
                            true => Some(MinMax::with(
                                num(&f[4]).ok_or_else(|| bad("min"))?,
                                num(&f[5]).ok_or_else(|| bad("max"))?,
                            )),
                            false => None,
                        };
                        let bucket = Bucket::with(
                            int(&f[1]).ok_or_else(|| bad("count"))? as u64,
                            num(&f[2]).ok_or_else(|| bad("sum"))?,
                            has,
                            int(&f[6]).ok_or_else(|| bad("distinct count"))?.max(0) as u64,
                        );
                        // A shared entity keeps every aggregate (its min and max too).
                        st.buckets.insert(start, bucket, m, true);
                    }
                }
                (Some("f"), Value::Map(fences)) => {
                    for (fk, off) in fences {
                        let fk = fk.as_str().ok_or_else(|| bad("fence key"))?;
                        let off = int(off).ok_or_else(|| bad("fence"))?;
                        st.fence.get_or_insert_with(Box::default).insert(fk.to_string(), off);
                    }
                }
                (Some("n"), Value::Boolean(false)) => {}
                // When the script last pushed the key's expiry back.
                (Some("x"), x) => st.expiry_pushed_ms = Some(int(x).ok_or_else(|| bad("expiry"))?),
                (Some("n"), n) => st.newest_ms = Some(int(n).ok_or_else(|| bad("newest"))?),
                // An empty Lua table packs as an empty array.
                (Some("f"), Value::Array(a)) if a.is_empty() => {}
                _ => return Err(bad("field")),
            }
        }
        Ok(st)
    }

    /// Encodes the state as `window.lua` keeps it in Redis (msgpack `{b, f, n, x}`); distinct
    /// values are not part of it.
    pub fn to_msgpack(&self, out: &mut Vec<u8>) {
        use rmp::encode as w;
        const VEC: &str = "writing to a Vec cannot fail";
        w::write_map_len(out, 3 + u32::from(self.expiry_pushed_ms.is_some())).expect(VEC);
        w::write_str(out, "b").expect(VEC);
        w::write_array_len(out, self.buckets.len() as u32).expect(VEC);
        for (start, b, m) in self.buckets.iter_all() {
            let m = m.filter(|m| m.min().is_some());
            w::write_array_len(out, 7).expect(VEC);
            w::write_sint(out, start).expect(VEC);
            w::write_uint(out, b.count()).expect(VEC);
            w::write_f64(out, b.sum).expect(VEC);
            w::write_bool(out, m.is_some()).expect(VEC);
            w::write_f64(out, m.and_then(MinMax::min).unwrap_or(0.0)).expect(VEC);
            w::write_f64(out, m.and_then(MinMax::max).unwrap_or(0.0)).expect(VEC);
            w::write_uint(out, u64::from(b.last_of())).expect(VEC);
        }
        w::write_str(out, "f").expect(VEC);
        let fence = self.fence.as_deref();
        w::write_map_len(out, fence.map_or(0, |f| f.len()) as u32).expect(VEC);
        for (k, &off) in fence.into_iter().flatten() {
            w::write_str(out, k).expect(VEC);
            w::write_sint(out, off).expect(VEC);
        }
        w::write_str(out, "n").expect(VEC);
        match self.newest_ms {
            Some(n) => {
                w::write_sint(out, n).expect(VEC);
            }
            None => w::write_bool(out, false).expect(VEC),
        }
        if let Some(x) = self.expiry_pushed_ms {
            w::write_str(out, "x").expect(VEC);
            w::write_sint(out, x).expect(VEC);
        }
    }
}
