-- Forget users: delete every key of each (state, bought set, served list; their dedupe
-- hashes and vectors live in the state hash) and record the erasure so that their events
-- up to now are skipped by the state step (apply_batch.lua) if they come again.
-- The record is keyed by the SHA-1 of the id (no raw id stays in Redis), valued with the
-- later of now and the user's newest event time (a producer's clock ahead of ours).
-- ARGV: 1 prefix, 2 now (epoch ms), 3.. user ids. Returns the keys deleted per user.
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local erased_key = prefix .. 'erased'
local out = {}
for a = 3, #ARGV do
  local user = ARGV[a]
  local ukey = prefix .. 'u:' .. user
  local at = math.max(now, tonumber(redis.call('HGET', ukey, 'ts') or '0'))
  out[#out + 1] = redis.call('DEL', ukey, ukey .. ':bought', prefix .. 'served:' .. user)
  local hash = redis.sha1hex(user)
  local before = tonumber(redis.call('HGET', erased_key, hash))
  if before == nil or at > before then
    redis.call('HSET', erased_key, hash, string.format('%d', at))
  end
end
return out
