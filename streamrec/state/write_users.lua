-- Write what serving produced for a batch of users in one round trip, for users that have
-- state: serving never makes a user (one forgotten while their list was computed stays
-- forgotten).
-- ARGV: 1 prefix, 2 TTL of a served list (s), 3 model version of the vectors,
--       4 number of served lists S, then S pairs {user id, packed item indexes},
--       then pairs {user id, packed float32 vector} to the end.
local prefix = ARGV[1]
local ttl = ARGV[2]
local version = ARGV[3]
local last_served = 4 + 2 * tonumber(ARGV[4])
for a = 5, last_served, 2 do
  if redis.call('EXISTS', prefix .. 'u:' .. ARGV[a]) == 1 then
    redis.call('SET', prefix .. 'served:' .. ARGV[a], ARGV[a + 1], 'EX', ttl)
  end
end
for a = last_served + 1, #ARGV, 2 do
  local ukey = prefix .. 'u:' .. ARGV[a]
  if redis.call('EXISTS', ukey) == 1 then
    redis.call('HSET', ukey, 'emb', ARGV[a + 1], 'ver', version)
  end
end
return 0
