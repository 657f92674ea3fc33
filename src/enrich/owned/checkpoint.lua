-- One partition's checkpoint, atomically: the changed window fields of the entities it
-- touched since the last checkpoint, its resume offset and its acknowledged offset, written
-- only while this instance still holds the partition (its claim's epoch is the current one).
-- Every key is in the partition's Redis Cluster slot (hash tag {topic/partition}).
--
-- KEYS[1]      the partition's meta hash: epoch, offset (resume here), acked, layout
-- KEYS[2..]    entity hashes (see window field encoding in src/enrich/window)
-- ARGV[1]      the writer's epoch
-- ARGV[2]      resume offset ('' = unchanged: an acknowledgement only)
-- ARGV[3]      acknowledged offset (every event below it has its decision published)
-- ARGV[4]      entity key time to live (ms)
-- then per entity key: nset, field, value, ... , ndel, field, ...
-- Returns 'ok', or 'fenced:<epoch>' when another instance claimed the partition since.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then
  return 'fenced:' .. tostring(epoch)
end
local i = 5
local CHUNK = 1000
for k = 2, #KEYS do
  local nset = tonumber(ARGV[i])
  i = i + 1
  local j = 0
  while j < nset do
    local n = math.min(CHUNK, nset - j)
    local args = {}
    for m = 0, n - 1 do
      args[#args + 1] = ARGV[i + 2 * (j + m)]
      args[#args + 1] = ARGV[i + 2 * (j + m) + 1]
    end
    redis.call('HSET', KEYS[k], unpack(args))
    j = j + n
  end
  i = i + 2 * nset
  local ndel = tonumber(ARGV[i])
  i = i + 1
  j = 0
  while j < ndel do
    local n = math.min(CHUNK, ndel - j)
    local args = {}
    for m = 0, n - 1 do
      args[#args + 1] = ARGV[i + j + m]
    end
    redis.call('HDEL', KEYS[k], unpack(args))
    j = j + n
  end
  i = i + ndel
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('PEXPIRE', KEYS[k], ARGV[4])
  end
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'offset', ARGV[2])
end
redis.call('HSET', KEYS[1], 'acked', ARGV[3])
return 'ok'
