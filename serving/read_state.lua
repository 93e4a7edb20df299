-- Read what serving needs for a batch of users in one round trip.
-- ARGV: 1 prefix, 2 m (last distinct items whose Markov rows are read),
--       3 K (successors read per row), 4 number of popular items,
--       5 '1' to read the stored user vectors (else emb and ver come back empty),
--       6.. user ids.
-- Returns {item_count, popular (flat idx, score...), blocked (indexes of the item ids
--          in the blocked set),
--          then per user {seq, bought, rows, emb, ver}} where rows is a flat list of
--          {item_idx, row_total, {succ, count, ...}} for the last m distinct items,
--          most recent first.
local prefix = ARGV[1]
local m = tonumber(ARGV[2])
local K = tonumber(ARGV[3])
local npop = tonumber(ARGV[4])
local with_vectors = ARGV[5] == '1'

local blocked = {}
for _, id in ipairs(redis.call('SMEMBERS', prefix .. 'blocked')) do
  local idx = redis.call('HGET', prefix .. 'item:idx', id)
  if idx then
    blocked[#blocked + 1] = idx
  end
end
local out = {
  redis.call('LLEN', prefix .. 'item:ids'),
  redis.call('ZREVRANGE', prefix .. 'pop', 0, npop - 1, 'WITHSCORES'),
  blocked,
}
for a = 6, #ARGV do
  local ukey = prefix .. 'u:' .. ARGV[a]
  local fields
  if with_vectors then
    fields = redis.call('HMGET', ukey, 'seq', 'emb', 'ver')
  else
    fields = redis.call('HMGET', ukey, 'seq')
  end
  local seq = fields[1] or ''
  local bought = redis.call('SMEMBERS', ukey .. ':bought')
  local rows = {}
  local seen = {}
  local taken = 0
  local pos = #seq - 3
  while pos >= 1 and taken < m do
    local item = struct.unpack('<I4', seq, pos)
    if not seen[item] then
      seen[item] = true
      taken = taken + 1
      rows[#rows + 1] = item
      rows[#rows + 1] = redis.call('HGET', prefix .. 'mk:total', item) or '0'
      rows[#rows + 1] = redis.call('ZREVRANGE', prefix .. 'mk:' .. item, 0, K - 1, 'WITHSCORES')
    end
    pos = pos - 4
  end
  out[#out + 1] = {seq, bought, rows, fields[2] or '', fields[3] or ''}
end
return out
