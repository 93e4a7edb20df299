-- Write what serving produced for a batch of users in one round trip.
-- ARGV: 1 prefix, 2 TTL of a served list (s), 3 model version of the vectors,
--       4 number of served lists S, then S pairs {user id, packed item indexes},
--       then pairs {user id, packed float32 vector} to the end.
local prefix = ARGV[1]
local ttl = ARGV[2]
local version = ARGV[3]
local last_served = 4 + 2 * tonumber(ARGV[4])
for a = 5, last_served, 2 do
  redis.call('SET', prefix .. 'served:' .. ARGV[a], ARGV[a + 1], 'EX', ttl)
end
for a = last_served + 1, #ARGV, 2 do
  redis.call('HSET', prefix .. 'u:' .. ARGV[a], 'emb', ARGV[a + 1], 'ver', version)
end
return 0
