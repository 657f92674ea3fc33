-- Claims a partition for its new owner: a new epoch (every later write by an earlier owner
-- is refused: see checkpoint.lua) and where its state's checkpoint stands.
-- KEYS[1] the partition's meta hash. Returns {epoch, resume offset or '', acked or ''}.
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSETNX', KEYS[1], 'layout', '1')
local v = redis.call('HMGET', KEYS[1], 'offset', 'acked')
return {tostring(epoch), v[1] or '', v[2] or ''}
