-- Read what serving needs for a batch of users in one round trip.
-- ARGV: 1 prefix, 2 m (last distinct items whose Markov rows are read),
--       3 K (successors read per row), 4 number of popular items,
--       5 '1' to read the stored user vectors (else emb and ver come back empty),
--       6.. user ids.
-- Returns {item_count, popular (flat idx, score...), blocked (indexes of the item ids
--          in the blocked set), rows,
--          then per user {seq, bought, row items, emb, ver}} where row items are the
--          user's last m distinct items, most recent first, and rows holds each of those
--          items' Markov row once per batch (users of a batch share popular items):
--          {items, lengths (successors per row), text}, text being, row after row, the
--          row's total then its top K {succ, count} pairs, separated by spaces. One string
--          instead of 2K reply elements per row: building and parsing those elements was
--          most of the read's cost.
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
local row_items, row_lengths, row_text, row_read = {}, {}, {}, {}
out[4] = {}  -- the rows, once all users are read
for a = 6, #ARGV do
  local ukey = prefix .. 'u:' .. ARGV[a]
  local fields
  if with_vectors then
    fields = redis.pcall('HMGET', ukey, 'seq', 'emb', 'ver')
  else
    fields = redis.pcall('HMGET', ukey, 'seq')
  end
  if fields.err then  -- a key of another type (corrupted): no state to read
    fields = {}
  end
  local seq = fields[1] or ''
  local bought = redis.pcall('ZRANGE', ukey .. ':bought', 0, -1)
  if bought.err then  -- the plain set of an older version
    bought = redis.pcall('SMEMBERS', ukey .. ':bought')
    if bought.err then
      bought = {}
    end
  end
  local items = {}
  local seen = {}
  local pos = #seq - 3
  while pos >= 1 and #items < m do
    local item = struct.unpack('<I4', seq, pos)
    if not seen[item] then
      seen[item] = true
      items[#items + 1] = item
      if not row_read[item] then
        row_read[item] = true
        local succ = redis.call('ZREVRANGE', prefix .. 'mk:' .. item, 0, K - 1, 'WITHSCORES')
        row_items[#row_items + 1] = item
        row_lengths[#row_lengths + 1] = #succ / 2
        row_text[#row_text + 1] = redis.call('HGET', prefix .. 'mk:total', item) or '0'
        row_text[#row_text + 1] = table.concat(succ, ' ')
      end
    end
    pos = pos - 4
  end
  out[#out + 1] = {seq, bought, items, fields[2] or '', fields[3] or ''}
end
out[4] = {row_items, row_lengths, table.concat(row_text, ' ')}
return out
