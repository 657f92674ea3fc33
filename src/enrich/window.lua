-- verdict: window updates + online-feature reads for a batch's entity groups, atomically.
-- Same semantics as src/enrich/window.rs (see its module doc); keep them in step.
--
-- KEYS: per group, its window state key (msgpack), its online-feature hash and its
-- distinct-value hash (value -> start of its most recent bucket). Every key of
-- one entity carries the entity id as a hash tag; with enrich.redis_cluster each call holds
-- one group (one slot), otherwise one call holds the whole batch.
-- ARGV: now_ms, ng, then per group: bucket_ms, lateness_ms, ttl_ms, nw, size_1..size_nw,
--       nf, feature_1..feature_nf, max_age_ms, ne, then per event:
--       fence_key, offset, time_ms, value|'', distinct|''
-- Returns, per group: nf feature values ('' = missing or stale) and, if nf > 0, their age in
--          seconds ('' = no _ts), then (if nw > 0) per event:
--          applied, late, since_last|'', and per window count, sum, min|'', max|'', distinct.

local function num(x) return string.format('%.17g', x) end

local now = tonumber(ARGV[1])
local ng = tonumber(ARGV[2])
local out = {}

local function group(wkey, fkey, dkey, a)
local B = tonumber(ARGV[a]); a = a + 1
local lateness = tonumber(ARGV[a]); a = a + 1
local ttl = tonumber(ARGV[a]); a = a + 1
local nw = tonumber(ARGV[a]); a = a + 1
local sizes = {}
local longest = 0
for i = 1, nw do
  sizes[i] = tonumber(ARGV[a]); a = a + 1
  if sizes[i] > longest then longest = sizes[i] end
end
local nf = tonumber(ARGV[a]); a = a + 1
local fields = {}
for i = 1, nf do fields[i] = ARGV[a]; a = a + 1 end
local max_age = tonumber(ARGV[a]); a = a + 1
local ne = tonumber(ARGV[a]); a = a + 1

if nf > 0 then
  local args = {}
  for i = 1, nf do args[i] = fields[i] end
  args[nf + 1] = '_ts'
  local vals = redis.call('HMGET', fkey, unpack(args))
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

-- state: b = list of {s, count, sum, has, min, max, last_of} sorted by s; f = fences;
-- n = newest. Distinct values live in their own hash (dkey), so a card seen at thousands
-- of merchants does not make every call (de)serialize them all.
local raw = redis.call('GET', wkey)
local st
if raw then st = cmsgpack.unpack(raw) else st = {b = {}, f = {}, n = false} end
local dirty = false

local function aggregates(t, size)
  local c, s, has, mn, mx, d = 0, 0.0, false, 0.0, 0.0, 0
  local bs = st.b
  for i = 1, #bs do
    local b = bs[i]
    if b[1] > t then break end
    if b[1] + B > t - size then
      c = c + b[2]
      s = s + b[3]
      if b[4] then
        if not has then mn, mx, has = b[5], b[6], true
        else
          if b[5] < mn then mn = b[5] end
          if b[6] > mx then mx = b[6] end
        end
      end
      d = d + b[7]
    end
  end
  return c, s, has, mn, mx, d
end

for _ = 1, ne do
  local fk = ARGV[a]; local off = tonumber(ARGV[a + 1]); local t = tonumber(ARGV[a + 2])
  local value = tonumber(ARGV[a + 3]); local dv = ARGV[a + 4]
  a = a + 5
  local replay = st.f[fk] ~= nil and off <= st.f[fk]
  local late = (not replay) and st.n and t < st.n - lateness
  local applied = (not replay) and (not late)
  local row = {}
  for i = 1, nw do
    local c, s, has, mn, mx, d = aggregates(t, sizes[i])
    row[#row + 1] = num(c); row[#row + 1] = num(s)
    row[#row + 1] = has and num(mn) or ''; row[#row + 1] = has and num(mx) or ''
    row[#row + 1] = num(d)
  end
  out[#out + 1] = applied and '1' or '0'
  out[#out + 1] = late and '1' or '0'
  if st.n then
    local gap = t - st.n
    if gap < 0 then gap = 0 end
    out[#out + 1] = num(gap)
  else
    out[#out + 1] = ''
  end
  for _, v in ipairs(row) do out[#out + 1] = v end

  if applied then
    local start = math.floor(t / B) * B
    local idx = nil
    for i, b in ipairs(st.b) do
      if b[1] == start then idx = i; break end
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
      local last = tonumber(redis.call('HGET', dkey, dv))
      if last == nil then
        redis.call('HSET', dkey, dv, start)
        b[7] = b[7] + 1
      elseif last < start then
        for _, x in ipairs(st.b) do
          if x[1] == last then x[7] = x[7] - 1; break end
        end
        redis.call('HSET', dkey, dv, start)
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
      local all = redis.call('HGETALL', dkey)
      for i = 1, #all, 2 do
        if not live[tonumber(all[i + 1])] then redis.call('HDEL', dkey, all[i]) end
      end
      st.b = kept
    end
  end
  if not replay then st.f[fk] = off end
  dirty = true
end

if dirty then
  redis.call('SET', wkey, cmsgpack.pack(st), 'PX', ttl)
  redis.call('PEXPIRE', dkey, ttl)
end
return a
end

local a = 3
for g = 1, ng do
  a = group(KEYS[3 * g - 2], KEYS[3 * g - 1], KEYS[3 * g], a)
end
return out
