-- Partitions' checkpoints: per partition, the changed window fields of the entities it
-- touched since its last checkpoint, its resume offset and its acknowledged offset, written
-- only while this instance still holds the partition (its claim's epoch is the current one).
-- One call holds one partition with enrich.redis_cluster (every key of a partition is in its
-- cluster slot: hash tag {topic/partition}), or every partition of a batch otherwise. A call
-- runs atomically; partitions are independent of each other (one fenced, the rest written).
--
-- KEYS   per partition: its meta hash (epoch, offset, acked, layout), then its entity hashes
-- ARGV   ttl_ms (entity key time to live), np, then per partition:
--          ne (entity keys), epoch, resume offset ('' = unchanged: an acknowledgement only),
--          acknowledged offset (every event below it has its decision published),
--          then per entity: nset, field, value, ..., ndel, field, ...
-- Returns per partition 'ok', 'fenced:<epoch>' when another instance has claimed it, or
-- 'lost' when the partition's hash holds no claim at all (Redis lost it: a failover to a
-- replica that had not received it, a flush, an eviction): nothing is written then.
local ttl = ARGV[1]
local np = tonumber(ARGV[2])
local CHUNK = 1000
local out = {}
local a, k = 3, 1
for p = 1, np do
  local ne = tonumber(ARGV[a])
  local epoch, offset, acked = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  local meta = KEYS[k]
  local current = redis.call('HGET', meta, 'epoch')
  local mine = current == epoch
  if not current then
    out[p] = 'lost'
  elseif not mine then
    out[p] = 'fenced:' .. current
  end
  for e = 1, ne do
    local key = KEYS[k + e]
    local nset = tonumber(ARGV[a])
    a = a + 1
    if mine then
      -- ARGV slices straight into the calls (no table per call); CHUNK bounds Lua's stack.
      local j = 0
      while j < nset do
        local n = math.min(CHUNK, nset - j)
        redis.call('HSET', key, unpack(ARGV, a + 2 * j, a + 2 * (j + n) - 1))
        j = j + n
      end
    end
    a = a + 2 * nset
    local ndel = tonumber(ARGV[a])
    a = a + 1
    if mine then
      local j = 0
      while j < ndel do
        local n = math.min(CHUNK, ndel - j)
        redis.call('HDEL', key, unpack(ARGV, a + j, a + j + n - 1))
        j = j + n
      end
      -- A key whose last field was just deleted is gone: PEXPIRE leaves it so.
      redis.call('PEXPIRE', key, ttl)
    end
    a = a + ndel
  end
  if mine then
    if offset ~= '' then
      redis.call('HSET', meta, 'offset', offset, 'acked', acked)
    else
      redis.call('HSET', meta, 'acked', acked)
    end
    out[p] = 'ok'
  end
  k = k + 1 + ne
end
return out
