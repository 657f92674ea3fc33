-- verdict: window updates + online-feature reads for a batch's entity groups, atomically.
-- Same semantics as src/enrich/window.rs (see its module doc); keep them in step.
--
-- KEYS: per group, its window hash and its online-feature hash. The window hash holds the
-- state in field 's' (msgpack), a version token in field 'v' (chosen by the writer, unique
-- per write) and, per distinct value x, field 'd:'..x = start of x's most recent bucket.
-- Both keys carry the entity id as a hash tag; with enrich.redis_cluster each call holds one
-- group (one slot), otherwise one call holds the whole batch.
-- ARGV: now_ms, nt, then per entity type: bucket_ms, lateness_ms, ttl_ms, nw,
--       size_1..size_nw, nf, feature_1..feature_nf, max_age_ms; then ng, then per group:
--       its type (1-based), '1' to read its features ('0': verdict has them cached), then
--       (nw > 0) a mode:
--       'f' (apply here): new token, ne, then per event: fence_key, offset, time_ms,
--           value|'', distinct|''
--       'c' (compare and set: verdict applied the events to its copy of the state): the
--           token verdict's copy has, the new token, nd, then per distinct value the applied
--           events used: value, its bucket as verdict knows it ('' none), its bucket after
--           the batch ('' unchanged); the new state; prune horizon ('' none); '1' to push
--           the expiry back. Stored only if the token and every listed value are as verdict
--           assumed; nothing is applied otherwise.
-- Returns, per group: nf feature values ('' = missing or stale) and, if nf > 0, their age in
--          seconds ('' = no _ts); then (nw > 0) for 'c': '=' (stored) or 'x' (the state had
--          changed: verdict sends the group again as 'f'); for 'f': the window state before
--          the batch (the msgpack string, '' if none) and per event one status: 'r' replayed
--          (fenced), 'l' late, or 'a' applied followed by the start of the distinct value's
--          most recent bucket before this event, if it had one ('a' alone otherwise).
-- The caller computes each event's aggregates from that state and these statuses, with the
-- same code as the in-process backend (src/enrich/window.rs): Lua only fences and applies.
-- Formatting 18 numbers per event in Lua cost more than everything else together, and each
-- redis.call costs about a microsecond, so a group makes three of them whatever its size:
-- HMGET state + distinct values, HMGET features, HSET; and a PEXPIRE when the key's expiry
-- needs pushing back. The state records when (st.x, caller's clock) the expiry was last set
-- to 1.1 x TTL; it is set again once a tenth of the TTL has passed, so a key always lives at
-- least TTL (longest window + lateness) after its last update, and at most 1.1 x TTL.
-- The compare-and-set path carries no events and skips the state's unpacking, the events
-- and the packing, which were most of a group's cost.

local function num(x) return string.format('%.17g', x) end

local now = tonumber(ARGV[1])
local out = {}

-- Entity types, once per call.
local specs = {}
local a = 3
for t = 1, tonumber(ARGV[2]) do
  local sp = {B = tonumber(ARGV[a]), lateness = tonumber(ARGV[a + 1]), ttl = tonumber(ARGV[a + 2])}
  local nw = tonumber(ARGV[a + 3])
  a = a + 4
  sp.nw, sp.longest = nw, 0
  for _ = 1, nw do
    local size = tonumber(ARGV[a]); a = a + 1
    if size > sp.longest then sp.longest = size end
  end
  local nf = tonumber(ARGV[a]); a = a + 1
  local fields = {}
  for i = 1, nf do fields[i] = ARGV[a]; a = a + 1 end
  fields[nf + 1] = '_ts'
  sp.nf, sp.fields, sp.max_age = nf, fields, tonumber(ARGV[a])
  a = a + 1
  specs[t] = sp
end
local ng = tonumber(ARGV[a]); a = a + 1

local function group(wkey, fkey, a)
local sp = specs[tonumber(ARGV[a])]
local nf = ARGV[a + 1] == '1' and sp.nf or 0
a = a + 2
local B, lateness, ttl, nw, longest, max_age = sp.B, sp.lateness, sp.ttl, sp.nw, sp.longest, sp.max_age

if nf > 0 then
  -- pcall: a key of another type written by hand (a string at the feature key) must not fail
  -- the whole batch's script for ever; it reads as no hash (counted and named by verdict).
  local vals = redis.pcall('HMGET', fkey, unpack(sp.fields))
  if type(vals) == 'table' and vals.err then vals = {} end
  local ts = tonumber(vals[nf + 1])
  local fresh = ts ~= nil and (now - ts) <= max_age
  for i = 1, nf do
    local v = vals[i]
    if fresh and v and tonumber(v) then out[#out + 1] = v else out[#out + 1] = '' end
  end
  -- The features' age in seconds ('' when the hash has no _ts).
  if ts ~= nil then out[#out + 1] = num((now - ts) / 1000) else out[#out + 1] = '' end
end

if nw == 0 then return a end

if ARGV[a] == 'c' then
  local expected, token = ARGV[a + 1], ARGV[a + 2]
  local nd = tonumber(ARGV[a + 3])
  local d0 = a + 4
  a = d0 + 3 * nd
  local blob, horizon, refresh = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2] == '1'
  a = a + 3
  local ask = {'v'}
  for i = 0, nd - 1 do ask[i + 2] = 'd:' .. ARGV[d0 + 3 * i] end
  local got = redis.call('HMGET', wkey, unpack(ask))
  local ok = got[1] == expected
  for i = 0, nd - 1 do
    if not ok then break end
    local want, have = ARGV[d0 + 3 * i + 1], got[i + 2]
    if want == '' then ok = not have else ok = have and tonumber(have) == tonumber(want) end
  end
  if not ok then
    out[#out + 1] = 'x'
    return a
  end
  local set = {'s', blob, 'v', token}
  for i = 0, nd - 1 do
    local now_in = ARGV[d0 + 3 * i + 2]
    if now_in ~= '' then
      set[#set + 1] = 'd:' .. ARGV[d0 + 3 * i]
      set[#set + 1] = now_in
    end
  end
  redis.call('HSET', wkey, unpack(set))
  if horizon then
    -- Buckets expired: drop the distinct values whose latest bucket went with them.
    local all = redis.call('HGETALL', wkey)
    for i = 1, #all, 2 do
      local f = all[i]
      if string.sub(f, 1, 2) == 'd:' and tonumber(all[i + 1]) + B <= horizon then redis.call('HDEL', wkey, f) end
    end
  end
  if refresh then redis.call('PEXPIRE', wkey, math.floor(ttl * 1.1)) end
  out[#out + 1] = '='
  return a
end
local token = ARGV[a + 1]
local ne = tonumber(ARGV[a + 2]); a = a + 3

-- state: b = list of {s, count, sum, has, min, max, last_of} sorted by s; f = fences;
-- n = newest. Distinct values are fields of their own, so a card seen at thousands of
-- merchants does not make every call (de)serialize them all; one HMGET reads the state and
-- the batch's values.
local ask = {'s'}
local last = {}
for i = 0, ne - 1 do
  local dv = ARGV[a + 5 * i + 4]
  if dv ~= '' and last[dv] == nil then
    last[dv] = false
    ask[#ask + 1] = 'd:' .. dv
  end
end
local got = redis.call('HMGET', wkey, unpack(ask))
for i = 2, #ask do
  last[string.sub(ask[i], 3)] = tonumber(got[i]) or false
end
local raw = got[1]
out[#out + 1] = raw or ''
local st
if raw then st = cmsgpack.unpack(raw) else st = {b = {}, f = {}, n = false} end
local changed = {}
local dirty = false

for _ = 1, ne do
  local fk = ARGV[a]; local off = tonumber(ARGV[a + 1]); local t = tonumber(ARGV[a + 2])
  local value = tonumber(ARGV[a + 3]); local dv = ARGV[a + 4]
  a = a + 5
  local replay = st.f[fk] ~= nil and off <= st.f[fk]
  local late = (not replay) and st.n and t < st.n - lateness
  local applied = (not replay) and (not late)
  local status = replay and 'r' or (late and 'l' or 'a')
  if applied then
    local start = math.floor(t / B) * B
    local idx = nil
    for i = #st.b, 1, -1 do
      local s = st.b[i][1]
      if s == start then idx = i; break end
      if s < start then break end
    end
    if not idx then
      local pos = #st.b + 1
      for i, b in ipairs(st.b) do
        if b[1] > start then pos = i; break end
      end
      table.insert(st.b, pos, {start, 0, 0.0, false, 0.0, 0.0, 0})
      idx = pos
    end
    local b = st.b[idx]
    b[2] = b[2] + 1
    if value then
      b[3] = b[3] + value
      if not b[4] then b[4], b[5], b[6] = true, value, value
      else
        if value < b[5] then b[5] = value end
        if value > b[6] then b[6] = value end
      end
    end
    if dv ~= '' then
      local prev = last[dv]
      if prev then status = string.format('a%d', prev) end
      if not prev then
        last[dv] = start; changed[dv] = true
        b[7] = b[7] + 1
      elseif prev < start then
        for _, x in ipairs(st.b) do
          if x[1] == prev then x[7] = x[7] - 1; break end
        end
        last[dv] = start; changed[dv] = true
        b[7] = b[7] + 1
      end
    end
    if (not st.n) or t > st.n then st.n = t end
    local horizon = st.n - (longest + lateness + B)
    -- Buckets are sorted: only rebuild when the oldest one has expired.
    if st.b[1][1] + B <= horizon then
      local kept = {}
      local live = {}
      for _, x in ipairs(st.b) do
        if x[1] + B > horizon then kept[#kept + 1] = x; live[x[1]] = true end
      end
      local all = redis.call('HGETALL', wkey)
      for i = 1, #all, 2 do
        local f = all[i]
        if string.sub(f, 1, 2) == 'd:' and not live[tonumber(all[i + 1])] then redis.call('HDEL', wkey, f) end
      end
      for v, s in pairs(last) do
        if s and not live[s] then last[v] = false; changed[v] = nil end
      end
      st.b = kept
    end
  end
  if not replay then st.f[fk] = off end
  out[#out + 1] = status
  dirty = true
end

if dirty then
  local refresh = (not st.x) or now - st.x > ttl / 10
  if refresh then st.x = now end
  local set = {'s', cmsgpack.pack(st), 'v', token}
  for v in pairs(changed) do
    set[#set + 1] = 'd:' .. v
    set[#set + 1] = last[v]
  end
  redis.call('HSET', wkey, unpack(set))
  if refresh then redis.call('PEXPIRE', wkey, math.floor(ttl * 1.1)) end
end
return a
end

for g = 1, ng do
  a = group(KEYS[2 * g - 1], KEYS[2 * g], a)
end
return out
